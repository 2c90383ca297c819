"""Fuzz decode_image with mutated real images: an array, or one ItemError, never anything else.

Seeds are small real files made with Pillow (JPEG, PNG in several modes, APNG, WebP still
and animated, GIF still and animated); Hypothesis mutates their bytes (flips, truncation,
insertion, deletion, duplicated spans, integer header fields) and, for PNG, their chunks
with the CRC recomputed, so the mutation gets past the CRC check into Pillow's parsers.

Deterministic (``derandomize``, no example database), so CI never flakes. The example
count is ``TAGGER_FUZZ_EXAMPLES`` (default 5,000: about 12 s on 2 cores); a long run:

    TAGGER_FUZZ_EXAMPLES=100000 .venv/bin/python -m pytest -q tests/test_images_fuzz.py
"""

from __future__ import annotations

import io
import os
import struct
import zlib
from datetime import timedelta

import numpy as np
import pytest
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st
from PIL import Image, PngImagePlugin

from tagger.exceptions import ItemError
from tagger.images import decode_image

EXAMPLES = int(os.environ.get("TAGGER_FUZZ_EXAMPLES", "5000"))
SIZE = 16
# Tiny, so that a mutated header can never make a big decode: every seed is far below it,
# and anything claiming more is refused from the header.
MAX_PIXELS = 64 * 64


# Exceptions that mean a programming error rather than damaged data.
BUG_TYPES = (AttributeError, NameError, TypeError, AssertionError, RecursionError)


def _encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def _seeds() -> dict[str, bytes]:
    rng = np.random.default_rng(7)
    rgb = Image.fromarray(rng.integers(0, 256, (12, 20, 3), dtype=np.uint8))
    rgba = Image.fromarray(rng.integers(0, 256, (12, 20, 4), dtype=np.uint8))
    grey16 = Image.fromarray(rng.integers(0, 65536, (12, 20), dtype=np.uint16))
    palette = rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=8)
    frames = [Image.new("RGB", (20, 12), (40 * i, 0, 255 - 40 * i)) for i in range(3)]
    exif = Image.Exif()
    exif[0x0112] = 6
    text = PngImagePlugin.PngInfo()
    text.add_text("Comment", "seed")
    return {
        "jpeg": _encode(rgb, "JPEG", quality=80),
        "jpeg-progressive-exif": _encode(rgb, "JPEG", progressive=True, exif=exif.tobytes()),
        "jpeg-grey": _encode(rgb.convert("L"), "JPEG"),
        "jpeg-cmyk": _encode(rgb.convert("CMYK"), "JPEG"),
        "png-rgb": _encode(rgb, "PNG", pnginfo=text),
        "png-rgba-interlaced": _encode(rgba, "PNG", interlace=1),
        "png-palette-trns": _encode(palette, "PNG", transparency=bytes(range(0, 256, 32))),
        "png-grey16": _encode(grey16, "PNG"),
        "png-bilevel-exif": _encode(rgb.convert("1"), "PNG", exif=exif.tobytes()),
        "apng": _encode(frames[0], "PNG", save_all=True, append_images=frames[1:]),
        "webp-lossy": _encode(rgb, "WEBP", quality=70),
        "webp-lossless-alpha": _encode(rgba, "WEBP", lossless=True),
        "webp-animated": _encode(
            frames[0], "WEBP", save_all=True, append_images=frames[1:], lossless=True
        ),
        "gif": _encode(palette, "GIF", transparency=2),
        "gif-animated": _encode(
            frames[0].convert("P"),
            "GIF",
            save_all=True,
            append_images=[f.convert("P") for f in frames[1:]],
            transparency=0,
            disposal=2,
        ),
    }


SEEDS = _seeds()


# --- byte-level mutations (every format) --------------------------------------------------


def _flip(data: bytes, pos: int, mask: int) -> bytes:
    if not data:
        return data
    b = bytearray(data)
    b[pos % len(b)] ^= mask
    return bytes(b)


def _truncate(data: bytes, pos: int) -> bytes:
    return data[: pos % (len(data) + 1)]


def _insert(data: bytes, pos: int, extra: bytes) -> bytes:
    pos %= len(data) + 1
    return data[:pos] + extra + data[pos:]


def _delete(data: bytes, pos: int, n: int) -> bytes:
    pos %= len(data) + 1
    return data[:pos] + data[pos + n :]


def _duplicate(data: bytes, start: int, n: int, at: int) -> bytes:
    start %= len(data) + 1
    return _insert(data, at, data[start : start + n])


def _set_int(data: bytes, pos: int, fmt: str, value: int) -> bytes:
    # Header fields (sizes, counts, flags) are 8/16/32-bit integers in either byte order.
    width = struct.calcsize(fmt)
    if len(data) < width:
        return data
    pos %= len(data) - width + 1
    mask = (1 << (8 * width)) - 1
    return data[:pos] + struct.pack(fmt, value & mask) + data[pos + width :]


positions = st.one_of(st.integers(0, 64), st.integers(0, 1 << 16))  # headers get extra care
byte_ops = st.one_of(
    st.tuples(st.just(_flip), positions, st.integers(1, 255)),
    st.tuples(st.just(_truncate), positions),
    st.tuples(st.just(_insert), positions, st.binary(min_size=1, max_size=16)),
    st.tuples(st.just(_delete), positions, st.integers(1, 32)),
    st.tuples(st.just(_duplicate), positions, st.integers(1, 64), positions),
    st.tuples(
        st.just(_set_int),
        positions,
        st.sampled_from([">B", ">H", "<H", ">I", "<I"]),
        st.one_of(st.integers(0, 300), st.integers(0, 2**32 - 1)),
    ),
)


# --- chunk-level mutations (PNG), CRCs recomputed -----------------------------------------

_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _chunks(data: bytes) -> list[list[bytes]]:
    out, pos = [], len(_SIGNATURE)
    while pos + 12 <= len(data):
        length, kind = struct.unpack_from(">I4s", data, pos)
        out.append([kind, data[pos + 8 : pos + 8 + length]])
        pos += 12 + length
    return out


def _build(chunks: list[list[bytes]]) -> bytes:
    parts = [_SIGNATURE]
    for kind, body in chunks:
        crc = zlib.crc32(kind + body) & 0xFFFFFFFF
        parts.append(struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc))
    return b"".join(parts)


def _chunk_op(data: bytes, op: str, i: int, j: int, value: int, extra: bytes) -> bytes:
    chunks = _chunks(data)
    if not data.startswith(_SIGNATURE) or not chunks:
        return data
    i %= len(chunks)
    j %= len(chunks)
    body = chunks[i][1]
    if op == "edit" and body:
        b = bytearray(body)
        b[j % len(b)] = value & 0xFF
        chunks[i][1] = bytes(b)
    elif op == "duplicate":
        chunks.insert(j, list(chunks[i]))
    elif op == "drop":
        del chunks[i]
    elif op == "swap":
        chunks[i], chunks[j] = chunks[j], chunks[i]
    elif op == "resize":  # cut or grow a chunk's data (lengths stay consistent)
        chunks[i][1] = body[: value % (len(body) + 1)] + extra
    elif op == "ihdr" and chunks[0][0] == b"IHDR" and len(chunks[0][1]) == 13:
        # width, height (small: tiny limit), bit depth, colour type, interlace
        fields = list(struct.unpack(">IIBBBBB", chunks[0][1]))
        field = j % 7
        choices = {2: (0, 1, 2, 4, 8, 16, 3), 3: (0, 1, 2, 3, 4, 6, 7), 6: (0, 1, 2)}
        if field in choices:
            fields[field] = choices[field][value % len(choices[field])]
        else:
            fields[field] = value % (1 << 32) if field < 2 else value % 256
        chunks[0][1] = struct.pack(">IIBBBBB", *fields)
    elif op == "foreign":  # a chunk an encoder might write, with arbitrary content
        new_kind = (b"tRNS", b"PLTE", b"acTL", b"fcTL", b"fdAT", b"eXIf", b"iCCP", b"zTXt")
        chunks.insert(j, [new_kind[value % len(new_kind)], extra])
    return _build(chunks)


chunk_ops = st.tuples(
    st.just(_chunk_op),
    st.sampled_from(["edit", "duplicate", "drop", "swap", "resize", "ihdr", "foreign"]),
    st.integers(0, 64),
    st.integers(0, 1 << 16),
    st.one_of(st.integers(0, 300), st.integers(0, 2**32 - 1)),
    st.binary(max_size=48),
)


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    name = draw(st.sampled_from(sorted(SEEDS)))
    data = SEEDS[name]
    ops = draw(st.lists(st.one_of(byte_ops, chunk_ops), min_size=1, max_size=3))
    for fn, *args in ops:
        data = fn(data, *args)
        note(f"{name}: {fn.__name__}{tuple(args)!r}")
    return data


@pytest.mark.timeout(60 + EXAMPLES // 20)
@pytest.mark.filterwarnings("ignore::UserWarning")  # Pillow's notes on odd metadata
@settings(
    max_examples=EXAMPLES,
    derandomize=True,
    database=None,
    # Seconds, not milliseconds, so a busy CI box cannot flake it; a real hang is caught
    # by the timeout above (a deadline is only checked once a call returns).
    deadline=timedelta(seconds=5),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(data=mutated())
def test_mutated_images_decode_or_raise_one_item_error(data):
    """Any mutation of a real image decodes to (16, 16, 3) uint8 or raises one ItemError
    (whose cause is damaged data, not a Python bug)."""
    try:
        arr = decode_image(data, size=SIZE, max_pixels=MAX_PIXELS)
    except ItemError as e:
        # decode_image maps whatever Pillow raises to CorruptImage; the error it replaced
        # must look like damaged data, not like a bug in our own code hidden as "corrupt".
        assert not isinstance(e.__context__, BUG_TYPES), repr(e.__context__)
        return
    assert isinstance(arr, np.ndarray)
    assert arr.shape == (SIZE, SIZE, 3) and arr.dtype == np.uint8


def test_seeds_decode():
    """Every unmutated seed decodes, so the fuzz starts from images that really work."""
    for name, data in SEEDS.items():
        arr = decode_image(data, size=SIZE, max_pixels=MAX_PIXELS)
        assert arr.shape == (SIZE, SIZE, 3), name
