"""Image decoding: bytes in, a (size, size, 3) uint8 RGB array out. Pure: Pillow + numpy only.

Every problem with one image becomes an :class:`~tagger.exceptions.ItemError` with a short
message (stored in ``failures``); nothing here touches storage, the database or the model.

Safety rules (see DESIGN.md, "Task contract"):

* only JPEG, PNG and WEBP are opened (``Image.open(..., formats=...)``), so the many exotic
  Pillow plugins never parse untrusted bytes;
* the pixel count is checked from the header, before any pixel is decoded;
* Pillow's own decompression-bomb warning is turned into an error (and so into TooLarge);
* truncated files are errors: ``ImageFile.LOAD_TRUNCATED_IMAGES`` is never set, because a
  half-grey image would be tagged with confidence and nobody would notice.

Train/serve consistency: the model must see images prepared exactly like this at training
time too, so ``train/`` should call :func:`decode_image` rather than its own resize.
"""

from __future__ import annotations

import io
import re
import struct
import warnings
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from tagger.exceptions import CorruptImage, ItemError, NotAnImage, TooLarge

ALLOWED_FORMATS = ("JPEG", "PNG", "WEBP")

# Plain resize ("squash") rather than letterbox: the reference model was trained on
# images resized straight to 224x224 without keeping the aspect ratio, so squashing is
# what it expects; letterboxing would shift the input distribution. Product shots are
# mostly near-square, so the distortion is mild. BILINEAR in Pillow is antialiased when
# shrinking and is the cheapest filter that is.
RESAMPLE = Image.Resampling.BILINEAR

# Background for transparent pixels: catalogue cut-outs are shown on white.
BACKGROUND = (255, 255, 255)

_BOMB_FILTER = ("error", None, Image.DecompressionBombWarning, None, 0)
_BOMB_PIXELS = re.compile(r"\((\d+) pixels\)")

# Magic numbers of formats people upload by mistake, for a more useful NotAnImage message.
_KNOWN_OTHER = (
    (b"GIF8", "a GIF image"),
    (b"BM", "a BMP image"),
    (b"II*\x00", "a TIFF image"),
    (b"MM\x00*", "a TIFF image"),
    (b"%PDF", "a PDF document"),
    (b"\x00\x00\x01\x00", "an ICO image"),
)

# Errors Pillow's decoders raise for damaged data (truncation raises OSError; bad
# headers/markers SyntaxError; broken chunk structure struct.error/IndexError/ValueError).
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, struct.error, IndexError, EOFError)


def decode_image(data: bytes, *, size: int, max_pixels: int) -> np.ndarray:
    """Decode one JPEG/PNG/WEBP into a writable ``(size, size, 3)`` uint8 RGB array.

    Raises :class:`NotAnImage` (empty, unknown or disallowed format), :class:`TooLarge`
    (more than ``max_pixels`` pixels, or over Pillow's bomb limit), :class:`CorruptImage`
    (header or pixel data damaged, e.g. a truncated upload).
    """
    if size < 1:
        raise ValueError(f"size must be positive, got {size}")
    if not data:
        raise NotAnImage("empty file (0 bytes)")
    _ensure_bomb_warning_is_error()

    try:
        img = Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
    except UnidentifiedImageError:
        raise NotAnImage(_not_an_image_message(data)) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise TooLarge(_bomb_message(e, max_pixels)) from None
    except _DECODE_ERRORS as e:
        # The allow-listed plugin accepted the magic number but could not parse the header.
        raise CorruptImage(f"unreadable image header: {_short(e)}") from None

    with img:
        width, height = img.size
        if width * height > max_pixels:
            raise TooLarge(
                f"image is {width}x{height} px ({width * height / 1e6:.1f} MP), "
                f"limit {max_pixels / 1e6:.1f} MP"
            )
        if img.format == "JPEG" or img.format == "MPO":
            # Let libjpeg decode at 1/2, 1/4 or 1/8 scale when the target is that much
            # smaller: several times faster for big product photos, and the result is never
            # smaller than the requested size (exif rotation does not matter: it is square).
            img.draft("RGB", (size, size))
        try:
            img.load()
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
            raise TooLarge(_bomb_message(e, max_pixels)) from None
        except _DECODE_ERRORS as e:
            raise CorruptImage(f"{img.format} data is damaged: {_short(e)}") from None
        rgb = _to_rgb(_apply_exif_orientation(img))
    if rgb.size != (size, size):
        rgb = rgb.resize((size, size), RESAMPLE)
    return np.array(rgb, dtype=np.uint8)


def decode_many(
    blobs: Mapping[str, bytes], *, size: int, max_pixels: int, workers: int = 1
) -> dict[str, np.ndarray | ItemError]:
    """Decode several images; each value is an array or the ItemError for that key.

    Pillow releases the GIL while decoding and resizing, so ``workers`` threads give real
    parallelism on multi-core hosts. Order of the result follows ``blobs``.
    """

    def one(data: bytes) -> np.ndarray | ItemError:
        try:
            return decode_image(data, size=size, max_pixels=max_pixels)
        except ItemError as e:
            return e

    if workers <= 1 or len(blobs) <= 1:
        return {key: one(data) for key, data in blobs.items()}
    with ThreadPoolExecutor(max_workers=min(workers, len(blobs))) as pool:
        results = pool.map(one, blobs.values())
        return dict(zip(blobs.keys(), results, strict=True))


def stack(arrays: Sequence[np.ndarray], size: int) -> np.ndarray:
    """Stack decoded images into one ``(N, size, size, 3)`` uint8 batch (N may be 0)."""
    expected = (size, size, 3)
    for i, a in enumerate(arrays):
        if a.shape != expected or a.dtype != np.uint8:
            raise ValueError(f"array {i} is {a.dtype}{a.shape}, expected uint8{expected}")
    if not arrays:
        return np.zeros((0, *expected), dtype=np.uint8)
    return np.stack(arrays)


# --- helpers ---------------------------------------------------------------------------


def _ensure_bomb_warning_is_error() -> None:
    """Make Pillow's DecompressionBombWarning raise, so a bomb can never slip through.

    ``warnings.catch_warnings()`` is not thread-safe (it swaps the global filter list and
    restores it on exit, racing with decode threads), so instead one filter is inserted
    once and left in place; checking first keeps repeated calls cheap and idempotent.
    It only concerns this one warning category, which nothing should want as a warning.
    """
    if _BOMB_FILTER not in warnings.filters:
        warnings.filterwarnings("error", category=Image.DecompressionBombWarning)


def _bomb_message(e: BaseException, max_pixels: int) -> str:
    limit = min(max_pixels, Image.MAX_IMAGE_PIXELS or max_pixels)
    m = _BOMB_PIXELS.search(str(e))
    if m:
        return f"image is {int(m.group(1)) / 1e6:.1f} MP, limit {limit / 1e6:.1f} MP"
    return f"image is over the decompression-bomb limit of {limit / 1e6:.1f} MP"


def _not_an_image_message(data: bytes) -> str:
    allowed = ", ".join(ALLOWED_FORMATS)
    head = data[:16]
    for magic, what in _KNOWN_OTHER:
        if head.startswith(magic):
            return f"{what}; only {allowed} are accepted"
    if head[4:8] == b"ftyp":
        return f"a HEIC/AVIF/MP4 file; only {allowed} are accepted"
    if head.lstrip().startswith(b"<"):
        return f"looks like HTML/XML text (an error page?), not {allowed}"
    return f"not a {allowed} image ({len(data)} bytes)"


def _short(e: BaseException, limit: int = 120) -> str:
    text = str(e) or type(e).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _apply_exif_orientation(img: Image.Image) -> Image.Image:
    # Phone and camera shots are often stored sideways with an EXIF Orientation tag.
    # Broken EXIF blocks are common and harmless for the pixels, so they must not cost
    # the item: keep the stored orientation instead.
    try:
        return ImageOps.exif_transpose(img)
    except Exception:
        return img


def _to_rgb(img: Image.Image) -> Image.Image:
    """Any mode Pillow gives for JPEG/PNG/WEBP -> 8-bit RGB, transparency over white."""
    mode = img.mode
    if mode.startswith("I"):
        # 16-bit greyscale PNG: Pillow's convert() clips to 0..255 instead of scaling,
        # which would turn nearly every pixel white. Scale 0..65535 to 0..255 ourselves.
        wide = np.asarray(img).astype(np.uint32)
        img = Image.fromarray(((wide * 255 + 32767) // 65535).clip(0, 255).astype(np.uint8))
        mode = img.mode
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        mode == "P" and "transparency" in img.info
    )
    if has_alpha:
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (*BACKGROUND, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if mode != "RGB":
        # CMYK (Adobe JPEGs are un-inverted by Pillow on load), L, 1, P, YCbCr, ...
        return img.convert("RGB")
    return img
