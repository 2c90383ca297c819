"""Decoding: formats, colour modes, EXIF orientation and every way an image can be bad."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from tagger.exceptions import CorruptImage, NotAnImage, TooLarge
from tagger.images import decode_image, decode_many, stack

RED, BLUE, WHITE = (255, 0, 0), (0, 0, 255), (255, 255, 255)
LIMIT = 40_000_000


def encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def noise(w: int, h: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims width x height, with a few bytes of garbage pixel data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", b"not zlib at all")
        + chunk(b"IEND", b"")
    )


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


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_allowed_formats_decode_to_square_uint8_rgb(fmt):
    """JPEG, PNG and WEBP of any shape decode to a writable (size, size, 3) uint8 array."""
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
        (np.random.default_rng(1).bytes(5000), "not a JPEG, PNG, WEBP"),
        (encode(noise(10, 10), "GIF"), "GIF"),
        (encode(noise(10, 10), "BMP"), "BMP"),
        (encode(noise(10, 10), "TIFF"), "TIFF"),
        (b"<html><body>403 Forbidden</body></html>", "HTML"),
    ],
    ids=["empty", "random", "gif", "bmp", "tiff", "html"],
)
def test_not_an_image(data, words):
    """Empty, random, HTML and disallowed formats (GIF/BMP/TIFF) are NotAnImage, named."""
    with pytest.raises(NotAnImage, match=words) as info:
        decode_image(data, size=8, max_pixels=LIMIT)
    assert info.value.reason == "not_an_image"


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
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


def test_stack_builds_a_batch_and_handles_empty():
    """stack gives (N, S, S, 3) uint8, (0, S, S, 3) for no images, and rejects wrong shapes."""
    arrays = [np.full((4, 4, 3), i, dtype=np.uint8) for i in range(3)]
    batch = stack(arrays, 4)
    assert batch.shape == (3, 4, 4, 3) and batch.dtype == np.uint8
    assert batch[2].max() == 2
    assert stack([], 4).shape == (0, 4, 4, 3)
    with pytest.raises(ValueError, match="expected"):
        stack([np.zeros((5, 5, 3), np.uint8)], 4)
