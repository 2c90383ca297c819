"""Decoding: formats, colour modes, EXIF orientation, memory and every way an image can be bad."""

from __future__ import annotations

import io
import struct
import threading
import time
import zlib

import numpy as np
import pytest
from PIL import Image, ImageFile, JpegImagePlugin

from tagger.exceptions import CorruptImage, MissingImage, NotAnImage, TooLarge
from tagger.images import RESAMPLE, decode_image, decode_many
from tagger.png import png_damage

RED, BLUE, WHITE = (255, 0, 0), (0, 0, 255), (255, 255, 255)
LIMIT = 40_000_000


def encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def noise(w: int, h: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))


def png_chunk(kind: bytes, data: bytes) -> bytes:
    """One PNG chunk with a correct CRC."""
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def png_file(*chunks: tuple[bytes, bytes]) -> bytes:
    """A PNG made of the given (type, data) chunks, each with a correct CRC."""
    return b"\x89PNG\r\n\x1a\n" + b"".join(png_chunk(kind, data) for kind, data in chunks)


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims width x height, with a few bytes of garbage pixel data."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    return png_file((b"IHDR", ihdr), (b"IDAT", b"not zlib at all"), (b"IEND", b""))


def chunk_offset(data: bytes, kind: bytes) -> int:
    """Byte offset of the first chunk of ``kind`` (its length field)."""
    return data.index(kind) - 4


def quadrant_colours(arr: np.ndarray) -> dict[str, tuple[int, ...]]:
    """Mean colour of the centre of each quadrant, rounded to the nearest pure colour."""
    s = arr.shape[0]
    q = s // 4
    centres = {"tl": (q, q), "tr": (q, 3 * q), "bl": (3 * q, q), "br": (3 * q, 3 * q)}
    out = {}
    for name, (y, x) in centres.items():
        patch = arr[y - 2 : y + 2, x - 2 : x + 2].reshape(-1, 3).mean(axis=0)
        out[name] = tuple(int(v > 127) * 255 for v in patch)
    return out


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "GIF"])
def test_allowed_formats_decode_to_square_uint8_rgb(fmt):
    """JPEG, PNG, WEBP and GIF of any shape decode to a writable (size, size, 3) uint8 array."""
    arr = decode_image(encode(noise(120, 80), fmt), size=32, max_pixels=LIMIT)
    assert arr.shape == (32, 32, 3)
    assert arr.dtype == np.uint8
    assert arr.flags.writeable


def test_large_jpeg_uses_reduced_decode_but_keeps_content():
    """A big JPEG (decoded at reduced scale) still gives the right colours at the target size."""
    img = Image.new("RGB", (1600, 1600), BLUE)
    img.paste(Image.new("RGB", (800, 800), RED), (0, 0))
    arr = decode_image(encode(img, "JPEG", quality=95), size=64, max_pixels=LIMIT)
    assert quadrant_colours(arr) == {"tl": RED, "tr": BLUE, "bl": BLUE, "br": BLUE}


@pytest.mark.parametrize(
    ("mode", "fmt", "colour", "expected"),
    [
        ("RGBA", "PNG", (255, 0, 0, 0), WHITE),  # fully transparent -> white background
        ("RGBA", "PNG", (255, 0, 0, 255), RED),
        ("RGBA", "WEBP", (0, 0, 255, 0), WHITE),
        ("LA", "PNG", (0, 0), WHITE),
        ("L", "PNG", 0, (0, 0, 0)),
        ("L", "JPEG", 255, WHITE),
        ("CMYK", "JPEG", (0, 255, 255, 0), RED),
        ("1", "PNG", 1, WHITE),
    ],
)
def test_colour_modes_become_rgb(mode, fmt, colour, expected):
    """Alpha, greyscale, bilevel and CMYK images become RGB; transparency is shown on white."""
    data = encode(
        Image.new(mode, (16, 16), colour), fmt, **({"lossless": True} if fmt == "WEBP" else {})
    )
    arr = decode_image(data, size=8, max_pixels=LIMIT)
    assert np.abs(arr.astype(int) - expected).max() <= 8


def test_palette_with_transparency_is_composited_on_white():
    """A palette PNG with a transparent index shows white there and its colour elsewhere."""
    img = Image.new("P", (16, 16), 0)
    img.putpalette([0, 0, 255, 255, 0, 0] + [0] * 762)
    img.paste(1, (8, 0, 16, 16))  # right half palette index 1 (red), left half index 0
    data = encode(img, "PNG", transparency=0)
    arr = decode_image(data, size=16, max_pixels=LIMIT)
    assert tuple(arr[8, 2]) == WHITE
    assert tuple(arr[8, 13]) == RED


def test_sixteen_bit_greyscale_is_scaled_not_clipped():
    """16-bit greyscale PNG values are scaled to 8 bits (Pillow's convert would clip to white)."""
    grey = np.full((8, 8), 32768, dtype=np.uint16)
    grey[:, 4:] = 0
    data = encode(Image.fromarray(grey), "PNG")
    arr = decode_image(data, size=8, max_pixels=LIMIT)
    assert 120 <= arr[0, 0, 0] <= 135
    assert arr[0, 7, 0] == 0


@pytest.mark.parametrize(
    ("orientation", "red_quadrant"),
    [(1, "tl"), (3, "br"), (6, "tr"), (8, "bl")],
)
def test_exif_orientation_is_applied(orientation, red_quadrant):
    """EXIF Orientation rotates the picture: a top-left red block lands where a viewer sees it."""
    # 60x30 stored image, red block in the top-left quadrant. Displayed per EXIF:
    # 3 = rotate 180 (block bottom-right), 6 = rotate 90 CW (top-right), 8 = 90 CCW
    # (bottom-left). Squashing to a square keeps quadrants, so the check is exact.
    img = Image.new("RGB", (60, 30), BLUE)
    img.paste(Image.new("RGB", (30, 15), RED), (0, 0))
    exif = Image.Exif()
    exif[0x0112] = orientation
    arr = decode_image(
        encode(img, "JPEG", quality=95, exif=exif.tobytes()), size=32, max_pixels=LIMIT
    )
    colours = quadrant_colours(arr)
    assert colours[red_quadrant] == RED
    assert sum(c == RED for c in colours.values()) == 1


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data")
def test_broken_exif_does_not_lose_the_image():
    """An unreadable EXIF block is ignored; the pixels still decode."""
    data = encode(noise(20, 20), "JPEG", exif=b"Exif\x00\x00MM\x00*garbage")
    assert decode_image(data, size=8, max_pixels=LIMIT).shape == (8, 8, 3)


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (b"", "empty"),
        (np.random.default_rng(1).bytes(5000), "not a JPEG, PNG, WEBP, GIF"),
        (encode(noise(10, 10), "BMP"), "BMP"),
        (encode(noise(10, 10), "TIFF"), "TIFF"),
        (b"<html><body>403 Forbidden</body></html>", "HTML"),
    ],
    ids=["empty", "random", "bmp", "tiff", "html"],
)
def test_not_an_image(data, words):
    """Empty, random, HTML and disallowed formats (BMP/TIFF) are NotAnImage, named."""
    with pytest.raises(NotAnImage, match=words) as info:
        decode_image(data, size=8, max_pixels=LIMIT)
    assert info.value.reason == "not_an_image"


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "GIF"])
def test_truncated_file_is_corrupt(fmt):
    """A file cut in half (interrupted upload) is CorruptImage, never a half-grey image."""
    data = encode(noise(256, 256), fmt)
    with pytest.raises(CorruptImage) as info:
        decode_image(data[: len(data) // 2], size=8, max_pixels=LIMIT)
    assert info.value.reason == "corrupt_image"


def test_over_pixel_limit_is_too_large_before_decoding():
    """Pixel count is checked from the header: garbage pixel data behind it is never decoded."""
    data = png_header_only(3000, 2000)
    with pytest.raises(TooLarge, match=r"3000x2000 px \(6\.0 MP\), limit 1\.0 MP") as info:
        decode_image(data, size=8, max_pixels=1_000_000)
    assert info.value.reason == "too_large"
    # the same bytes under a generous limit do get decoded, and fail as corrupt
    with pytest.raises(CorruptImage):
        decode_image(data, size=8, max_pixels=LIMIT)


def test_real_image_over_limit_is_too_large():
    """A genuine (well-compressed) 2000x2000 PNG is TooLarge under a 1 MP limit."""
    data = encode(Image.new("L", (2000, 2000)), "PNG")
    with pytest.raises(TooLarge, match=r"4\.0 MP"):
        decode_image(data, size=8, max_pixels=1_000_000)


def test_decompression_bomb_error_is_too_large():
    """A header claiming 50000x50000 (Pillow's bomb *error*) is TooLarge, even with a huge limit."""
    with pytest.raises(TooLarge, match=r"2500\.0 MP"):
        decode_image(png_header_only(50_000, 50_000), size=8, max_pixels=10**12)


def test_decompression_bomb_warning_is_too_large_not_a_warning(recwarn):
    """Above Pillow's warning threshold the bomb warning becomes TooLarge, not a logged warning."""
    pixels = Image.MAX_IMAGE_PIXELS + 1_000_000  # between the warning and error thresholds
    with pytest.raises(TooLarge):
        decode_image(png_header_only(pixels // 1000, 1000), size=8, max_pixels=10**12)
    assert not [w for w in recwarn if issubclass(w.category, Image.DecompressionBombWarning)]


def test_decode_many_keeps_keys_and_returns_errors():
    """decode_many maps each key to an array or its ItemError, in the input order, with threads."""
    blobs = {f"ok{i}": encode(noise(30, 20, seed=i), "PNG") for i in range(6)}
    blobs["bad"] = b"nope"
    blobs["cut"] = encode(noise(64, 64), "JPEG")[:300]
    out = decode_many(blobs, size=16, max_pixels=LIMIT, workers=4)
    assert list(out) == list(blobs)
    assert all(out[f"ok{i}"].shape == (16, 16, 3) for i in range(6))
    assert isinstance(out["bad"], NotAnImage)
    assert isinstance(out["cut"], CorruptImage)
    serial = decode_many(blobs, size=16, max_pixels=LIMIT, workers=1)
    assert all(np.array_equal(serial[f"ok{i}"], out[f"ok{i}"]) for i in range(6))


# --- every exception an image can cause is an ItemError -----------------------------------


def palette_png(trns: bytes) -> bytes:
    """A 4x4 palette PNG (red | blue columns, 2-entry palette) with the given tRNS chunk."""
    ihdr = struct.pack(">IIBBBBB", 4, 4, 8, 3, 0, 0, 0)
    rows = b"".join(b"\x00" + bytes([0, 0, 1, 1]) for _ in range(4))
    return png_file(
        (b"IHDR", ihdr),
        (b"PLTE", bytes([*RED, *BLUE])),
        (b"tRNS", trns),
        (b"IDAT", zlib.compress(rows)),
        (b"IEND", b""),
    )


def test_transparency_index_beyond_the_palette_is_ignored():
    """A tRNS naming index 280 of a 2-colour palette (Pillow: 'palette index out of range')
    decodes opaque, as viewers show it: no pixel can use that index."""
    data = palette_png(bytes([255] * 280 + [0]))
    arr = decode_image(data, size=4, max_pixels=LIMIT)
    assert tuple(arr[0, 0]) == RED and tuple(arr[0, 3]) == BLUE


def test_transparency_table_longer_than_256_entries_is_cut():
    """A 300-entry tRNS alpha table (more than any palette) keeps its first entries' alpha."""
    data = palette_png(bytes([0, 255] + [128] * 298))
    arr = decode_image(data, size=4, max_pixels=LIMIT)
    assert tuple(arr[0, 0]) == WHITE and tuple(arr[0, 3]) == BLUE


@pytest.mark.parametrize("method", ["load", "convert", "resize", "reduce", "getexif"])
@pytest.mark.parametrize("error", [KeyError, ZeroDivisionError, RuntimeError, AssertionError])
def test_any_error_pillow_raises_becomes_corrupt_image(monkeypatch, method, error):
    """Whatever Pillow raises while loading, converting or resizing is CorruptImage, named."""

    def broken(self, *args, **kwargs):
        raise error("boom")

    target = ImageFile.ImageFile if method == "load" else Image.Image
    monkeypatch.setattr(target, method, broken)
    data = encode(Image.new("RGBA", (600, 600), (255, 0, 0, 128)), "PNG")
    if method == "getexif":  # a broken EXIF block costs the orientation, not the image
        assert decode_image(data, size=8, max_pixels=LIMIT).shape == (8, 8, 3)
        return
    with pytest.raises(CorruptImage, match=r"PNG data is damaged: .*boom"):
        decode_image(data, size=8, max_pixels=LIMIT)


def test_memory_error_is_too_large(monkeypatch):
    """Running out of memory while decoding is TooLarge for that item, not a crashed batch."""

    def no_memory(self):
        raise MemoryError

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_memory)
    with pytest.raises(TooLarge, match="not enough memory"):
        decode_image(encode(noise(20, 20), "PNG"), size=8, max_pixels=LIMIT)


def test_interrupts_and_time_limits_are_not_swallowed(monkeypatch):
    """KeyboardInterrupt and Celery's soft time limit propagate instead of becoming an ItemError."""
    soft_limit = type("SoftTimeLimitExceeded", (Exception,), {"__module__": "billiard.exceptions"})
    data = encode(noise(20, 20), "PNG")
    for error in (KeyboardInterrupt, soft_limit):

        def interrupted(self, *args, error=error, **kwargs):
            raise error()

        monkeypatch.setattr(Image.Image, "resize", interrupted)
        with pytest.raises(error):
            decode_image(data, size=8, max_pixels=LIMIT)
        with pytest.raises(error):
            decode_many({"a": data}, size=8, max_pixels=LIMIT)


# --- GIF and animations -------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["P", "L"])
def test_gif_transparency_is_composited_on_white(mode):
    """A GIF's transparent index (colour or grey palette) shows white; other pixels keep colour."""
    img = Image.new(mode, (16, 16), 0)
    if mode == "P":
        img.putpalette([0, 0, 255, 255, 0, 0] + [0] * 762)
        img.paste(1, (8, 0, 16, 16))
    else:
        img.paste(200, (8, 0, 16, 16))
    arr = decode_image(encode(img, "GIF", transparency=0), size=16, max_pixels=LIMIT)
    assert tuple(arr[8, 2]) == WHITE
    assert tuple(arr[8, 13]) == (RED if mode == "P" else (200, 200, 200))


def animation(fmt: str, frames: int) -> bytes:
    """An animation whose first frame is red and the others shades of blue (encoders merge
    identical frames)."""
    images = [Image.new("RGB", (32, 32), (0, 0, 255 - 20 * i)) for i in range(frames)]
    images[0] = Image.new("RGB", (32, 32), RED)
    if fmt == "GIF":
        images = [im.convert("P") for im in images]
    extra = {"lossless": True} if fmt == "WEBP" else {}
    return encode(images[0], fmt, save_all=True, append_images=images[1:], **extra)


@pytest.mark.parametrize("fmt", ["GIF", "WEBP", "PNG"])
def test_animations_give_their_first_frame(fmt):
    """Animated GIF, WebP and PNG (APNG) decode to their first frame."""
    arr = decode_image(animation(fmt, 3), size=8, max_pixels=LIMIT)
    assert np.abs(arr.astype(int) - RED).max() <= 8


@pytest.mark.parametrize("fmt", ["WEBP", "PNG"])
def test_more_frames_than_max_frames_is_too_large(fmt):
    """An animation whose file states more than max_frames frames is TooLarge, undecoded."""
    data = animation(fmt, 4)
    with pytest.raises(TooLarge, match="4 frames, limit 3") as info:
        decode_image(data, size=8, max_pixels=LIMIT, max_frames=3)
    assert info.value.reason == "too_large"
    assert decode_image(data, size=8, max_pixels=LIMIT, max_frames=4).shape == (8, 8, 3)


def test_gif_frames_are_not_counted():
    """A GIF states no frame count and only its first frame is decoded, so none is walked."""
    assert decode_image(animation("GIF", 4), size=8, max_pixels=LIMIT, max_frames=1).shape
    # the frames after the first are never parsed: garbage there costs nothing
    data = animation("GIF", 2)
    assert decode_image(data[:-20] + b"\x00" * 19 + b";", size=8, max_pixels=LIMIT).shape


def test_gif_over_pixel_limit_is_too_large():
    """A GIF's logical screen counts against the same pixel limit as every other format."""
    data = encode(Image.new("P", (2000, 2000)), "GIF")
    with pytest.raises(TooLarge, match=r"2000x2000 px \(4\.0 MP\)"):
        decode_image(data, size=8, max_pixels=1_000_000)


# --- PNG integrity ------------------------------------------------------------------------


@pytest.mark.parametrize("kind", [b"IHDR", b"IDAT", b"IEND", b"tEXt"])
@pytest.mark.parametrize("where", ["data", "crc"])
def test_png_chunk_failing_its_crc_is_corrupt(kind, where):
    """One flipped bit in any chunk (pixel data, header, text, end) or its CRC is CorruptImage."""
    good = encode(noise(32, 32), "PNG", pnginfo=text_info())
    start = chunk_offset(good, kind)
    length = struct.unpack_from(">I", good, start)[0]
    flip = start + 8 + length - 1 if where == "data" and length else start + 8 + length
    if kind == b"IEND" and where == "data":
        flip = start + 4  # IEND has no data: damage its type's CRC-covered bytes instead
    bad = bytearray(good)
    bad[flip] ^= 0x01
    with pytest.raises(CorruptImage, match=r"CRC|invalid type") as info:
        decode_image(bytes(bad), size=8, max_pixels=LIMIT)
    assert info.value.reason == "corrupt_image"


def text_info():
    """PNG metadata with one tEXt chunk."""
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", "made in a test")
    return info


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (b"\x89PNG\r\n\x1a\n", "unreadable PNG header"),
        (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IEND", b""), "first chunk is IEND"),
        (png_header_only(8, 8)[:40], "truncated"),
        (png_header_only(8, 8)[:8] + b"\x00\x00\x00\x0d1HDR" + b"\x00" * 17, "invalid type"),
        (b"\x89PNG\r\n\x1a\n\xff\xff\xff\xffIHDR" + b"\x00" * 20, "impossible length"),
        (b"\xff\xd8\xff" + b"\x00" * 100, "unreadable JPEG header"),
        (b"GIF89a" + b"\x00" * 3, "GIF"),
        (b"RIFF\x10\x00\x00\x00WEBPVP8 " + b"\x00" * 8, "WEBP"),
    ],
    ids=[
        "signature-only",
        "no-ihdr",
        "cut-chunk",
        "bad-type",
        "huge-length",
        "jpeg",
        "gif",
        "webp",
    ],
)
def test_damaged_file_of_an_allowed_format_is_corrupt_not_unknown(data, words):
    """Bytes that start like a PNG/JPEG/GIF/WEBP but do not parse are CorruptImage, not unknown."""
    with pytest.raises(CorruptImage, match=words):
        decode_image(data, size=8, max_pixels=LIMIT)


def test_png_checker_accepts_whole_files_and_ignores_bytes_after_iend():
    """png_damage passes a whole PNG (and APNG); bytes after IEND do not stop the decode."""
    for data in (encode(noise(16, 16), "PNG"), animation("PNG", 2)):
        assert png_damage(data) is None
    data = encode(noise(16, 16), "PNG") + b"appended by some tool"
    assert decode_image(data, size=8, max_pixels=LIMIT).shape == (8, 8, 3)


# --- memory: reduce first, copy small -----------------------------------------------------


def big_quadrants(mode: str) -> Image.Image:
    """A 1200x800 image in ``mode``: top-left quadrant red (white for greyscale), rest blue
    (black)."""
    if mode in ("L", "I;16"):
        grey = np.zeros((800, 1200), dtype=np.uint16 if mode == "I;16" else np.uint8)
        grey[:400, :600] = np.iinfo(grey.dtype).max
        return Image.fromarray(grey)
    rgb = Image.new("RGB", (1200, 800), BLUE)
    rgb.paste(Image.new("RGB", (600, 400), RED), (0, 0))
    if mode == "P":
        return rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=4)
    return rgb.convert(mode)


@pytest.mark.parametrize(
    ("mode", "options", "full_size_copies"),
    [
        ("RGB", {}, 0),
        ("L", {}, 0),
        ("CMYK", {}, 0),
        ("RGBA", {}, 1),  # premultiplied alpha, so transparent pixels' colour cannot bleed
        ("P", {}, 1),  # palette -> RGB: palette indices cannot be averaged
        ("P", {"transparency": 3}, 2),  # palette -> RGBA -> premultiplied
        ("I;16", {}, 1),  # 16-bit -> 32-bit: reduce() cannot average 16-bit pixels
    ],
)
def test_big_image_is_reduced_before_full_size_copies(monkeypatch, mode, options, full_size_copies):
    """After load, a big image gets only the full-size copies reduce() needs for its mode,
    instead of EXIF-transpose, convert and composite copies; its content is kept."""
    fmt = "JPEG" if mode == "CMYK" else "PNG"
    data = encode(big_quadrants(mode), fmt, **options)
    sizes = []
    original = Image.Image._new

    def spy(self, im):
        sizes.append(im.size)
        return original(self, im)

    monkeypatch.setattr(Image.Image, "_new", spy)
    if fmt == "JPEG":
        monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", lambda self, *a: None)
    arr = decode_image(data, size=32, max_pixels=LIMIT)
    assert sizes.count((1200, 800)) == full_size_copies
    assert all(w * h <= 1200 * 800 // 4 for w, h in sizes if (w, h) != (1200, 800))
    if mode in ("L", "I;16"):
        assert quadrant_colours(arr) == {
            "tl": WHITE,
            "tr": (0, 0, 0),
            "bl": (0, 0, 0),
            "br": (0, 0, 0),
        }
    else:
        assert quadrant_colours(arr) == {"tl": RED, "tr": BLUE, "bl": BLUE, "br": BLUE}


def test_reduced_decode_matches_a_full_size_resize():
    """Box-reducing before the resize changes a smooth picture by at most a few levels."""
    y, x = np.mgrid[0:900, 0:1500]
    rgba = np.dstack([x * 255 // 1500, y * 255 // 900, (x + y) % 256, x * 255 // 1500])
    img = Image.fromarray(rgba.astype(np.uint8), "RGBA")
    arr = decode_image(encode(img, "PNG"), size=64, max_pixels=LIMIT)
    background = Image.new("RGBA", img.size, (*WHITE, 255))
    full = Image.alpha_composite(background, img).convert("RGB").resize((64, 64), RESAMPLE)
    assert np.abs(arr.astype(int) - np.asarray(full, dtype=int)).mean() < 2


def test_big_sixteen_bit_greyscale_is_scaled_after_reduce():
    """A big 16-bit greyscale PNG takes the reduce path and is still scaled, not clipped."""
    grey = np.full((800, 1200), 32768, dtype=np.uint16)
    grey[:, 600:] = 0
    arr = decode_image(encode(Image.fromarray(grey), "PNG"), size=16, max_pixels=LIMIT)
    assert 120 <= arr[8, 2, 0] <= 135
    assert arr[8, 13, 0] == 0


@pytest.mark.parametrize("side", [8, 1200])
def test_sixteen_bit_greyscale_with_a_colour_key_is_scaled_not_clipped(side):
    """16-bit grey with a tRNS colour key is drawn opaque and scaled, small or big (RGBA
    conversion of 16-bit pixels would clip them to white)."""
    grey = np.full((side, side), 40000, dtype=np.uint16)
    grey[:, : side // 2] = 1000
    data = encode(Image.fromarray(grey), "PNG", transparency=1000)
    arr = decode_image(data, size=8, max_pixels=LIMIT)
    assert tuple(arr[4, 1]) == (4, 4, 4)
    assert tuple(arr[4, 6]) == (156, 156, 156)


@pytest.mark.parametrize("side", [8, 1200])
@pytest.mark.parametrize("mode", ["L", "RGB"])
def test_colour_key_transparency_is_composited_on_white(mode, side):
    """A greyscale or RGB PNG's tRNS colour key shows white, at any size (before and after
    reduce), while other colours are kept."""
    key, other = (7, 200) if mode == "L" else ((1, 2, 3), (200, 100, 0))
    img = Image.new(mode, (side, side), other)
    img.paste(key, (0, 0, side // 2, side))
    arr = decode_image(encode(img, "PNG", transparency=key), size=8, max_pixels=LIMIT)
    assert tuple(arr[4, 1]) == WHITE
    assert tuple(arr[4, 6]) == ((200,) * 3 if mode == "L" else other)


def test_exif_orientation_is_applied_to_a_big_png():
    """EXIF orientation of a big PNG (reduced first, turned last) puts the red block right."""
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW: the top-left block is shown top-right
    data = encode(big_quadrants("RGB"), "PNG", exif=exif.tobytes())
    colours = quadrant_colours(decode_image(data, size=32, max_pixels=LIMIT))
    assert colours == {"tl": BLUE, "tr": RED, "bl": BLUE, "br": BLUE}


# --- decode_many: a pixel budget across threads -------------------------------------------


def test_decode_many_keeps_decoding_pixels_within_the_budget(monkeypatch):
    """With a pixel budget, images loading at once never exceed it; a bigger one loads alone."""
    lock = threading.Lock()
    in_flight = [0]
    seen: list[int] = []
    original = ImageFile.ImageFile.load

    def slow_load(self):
        with lock:
            in_flight[0] += self.width * self.height
            seen.append(in_flight[0])
        try:
            time.sleep(0.02)
            return original(self)
        finally:
            with lock:
                in_flight[0] -= self.width * self.height

    monkeypatch.setattr(ImageFile.ImageFile, "load", slow_load)
    blobs = {f"small{i}": encode(noise(100, 100, seed=i), "PNG") for i in range(8)}
    blobs["big"] = encode(noise(200, 200), "PNG")  # 40,000 px: more than the whole budget
    out = decode_many(blobs, size=16, max_pixels=LIMIT, workers=4, pixel_budget=25_000)
    assert all(isinstance(a, np.ndarray) for a in out.values())
    assert seen and all(n <= 25_000 or n == 40_000 for n in seen)


def test_decode_many_passes_item_errors_through_and_never_raises():
    """Fetch errors pass through; damaged images of every kind come back as their ItemError."""
    good = encode(noise(16, 16), "PNG")
    idat = bytearray(good)
    idat[chunk_offset(good, b"IDAT") + 9] ^= 0xFF
    blobs = {
        "fetch": MissingImage("no such key"),
        "trns": palette_png(bytes([255] * 280 + [0])),
        "idat": bytes(idat),
        "empty": b"",
        "ok": good,
    }
    for workers in (1, 3):
        out = decode_many(blobs, size=8, max_pixels=LIMIT, workers=workers, pixel_budget=None)
        assert list(out) == list(blobs)
        assert out["fetch"] is blobs["fetch"]
        assert out["trns"].shape == out["ok"].shape == (8, 8, 3)
        assert isinstance(out["idat"], CorruptImage)
        assert isinstance(out["empty"], NotAnImage)
