"""Image decoding: bytes in, a (size, size, 3) uint8 RGB array out. Pure: Pillow + numpy only.

Every problem with one image becomes an :class:`~tagger.exceptions.ItemError` with a short
message (stored in ``failures``); nothing here touches storage, the database or the model.
Nothing else escapes for any bytes: whatever Pillow raises on hostile input is mapped to
CorruptImage (or TooLarge for memory), so one bad image never costs its batch.

Safety rules:

* only JPEG, PNG, WEBP and GIF are opened (``Image.open(..., formats=...)``), so the many
  exotic Pillow plugins never parse untrusted bytes;
* a PNG's chunk CRCs are all checked (:mod:`tagger.png`) before Pillow sees the file;
* the pixel count (and, where the file states it, the frame count) is checked from the
  header, before any pixel is decoded; only the first frame of an animation is decoded;
* Pillow's own decompression-bomb warning is turned into an error (and so into TooLarge);
* truncated files are errors: ``ImageFile.LOAD_TRUNCATED_IMAGES`` is never set, because a
  half-grey image would be tagged with confidence and nobody would notice.

Memory: a big image is box-reduced (``Image.reduce``) right after loading, before any mode
conversion or compositing, so only the decoded image itself is ever full size; and
:func:`decode_many` caps the pixels being decoded at once across its threads.

Train/serve consistency: the model must see images prepared exactly like this at training
time too, so ``train/`` should call :func:`decode_image` rather than its own resize.
"""

from __future__ import annotations

import io
import os
import re
import warnings
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, nullcontext

import numpy as np
from PIL import ExifTags, Image, UnidentifiedImageError

from tagger import image_modes
from tagger.exceptions import CorruptImage, ItemError, NotAnImage, TooLarge
from tagger.pixel_budget import PixelBudget
from tagger.png import SIGNATURE as PNG_SIGNATURE
from tagger.png import png_damage

ALLOWED_FORMATS = ("JPEG", "PNG", "WEBP", "GIF")

# Plain resize ("squash") rather than letterbox: the reference model was trained on
# images resized straight to 224x224 without keeping the aspect ratio, so squashing is
# what it expects; letterboxing would shift the input distribution. Product shots are
# mostly near-square, so the distortion is mild. BILINEAR in Pillow is antialiased when
# shrinking and is the cheapest filter that is.
RESAMPLE = Image.Resampling.BILINEAR

# Animations with more frames than this are refused, where the file states its count
# (APNG, animated WebP, MPO). Only the first frame is ever decoded, so this is a policy
# ("that is a video, not a product picture") more than a cost limit.
MAX_FRAMES = 1000

# Pillow allocates an image in blocks of 16 MiB by default. Once glibc has freed one such
# mmap'd block it raises its mmap threshold to that size and serves later blocks from
# per-thread heaps, which keep freed memory for the thread that used it: with 4 decode
# threads the worker's RSS then climbs towards 4 of the largest images whatever the
# pixel budget says. Blocks over 32 MiB are always mmap'd and go back to the system when
# freed, so a full-size image is made of one block of up to this size instead.
# An operator's PILLOW_BLOCK_SIZE still wins.
PILLOW_BLOCK_SIZE = 256 * 2**20
if "PILLOW_BLOCK_SIZE" not in os.environ:
    Image.core.set_block_size(PILLOW_BLOCK_SIZE)

_BOMB_FILTER = ("error", None, Image.DecompressionBombWarning, None, 0)
_BOMB_PIXELS = re.compile(r"\((\d+) pixels\)")

# Signatures of the allowed formats: bytes that start like one of them but that Pillow
# cannot parse are a damaged image (CorruptImage), not some other kind of file.
_SIGNATURES = (
    (PNG_SIGNATURE, "PNG"),
    (b"\xff\xd8\xff", "JPEG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
)

# Magic numbers of formats people upload by mistake, for a more useful NotAnImage message.
_KNOWN_OTHER = (
    (b"BM", "a BMP image"),
    (b"II*\x00", "a TIFF image"),
    (b"MM\x00*", "a TIFF image"),
    (b"%PDF", "a PDF document"),
    (b"\x00\x00\x01\x00", "an ICO image"),
)

_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def decode_image(
    data: bytes, *, size: int, max_pixels: int, max_frames: int = MAX_FRAMES
) -> np.ndarray:
    """Decode one JPEG/PNG/WEBP/GIF into a writable ``(size, size, 3)`` uint8 RGB array.

    Animations give their first frame. Raises only :class:`ItemError` subclasses for bad
    bytes: :class:`NotAnImage` (empty, unknown or disallowed format), :class:`TooLarge`
    (more than ``max_pixels`` pixels or ``max_frames`` frames, over Pillow's bomb limit,
    or out of memory), :class:`CorruptImage` (anything damaged, e.g. a truncated upload).
    """
    if size < 1:
        raise ValueError(f"size must be positive, got {size}")
    return _decode(data, size=size, max_pixels=max_pixels, max_frames=max_frames, budget=None)


def decode_many(
    blobs: Mapping[str, bytes | ItemError],
    *,
    size: int,
    max_pixels: int,
    workers: int = 1,
    pixel_budget: int | None = None,
    max_frames: int = MAX_FRAMES,
) -> dict[str, np.ndarray | ItemError]:
    """Decode several images; each value is an array or the ItemError for that key.

    Never raises for a bad image. Keys and their order follow ``blobs``; a value that is
    already an ItemError (say, a failed fetch) is passed through. Pillow releases the GIL
    while decoding and resizing, so ``workers`` threads give real parallelism.

    ``pixel_budget`` bounds memory: an image's full decode starts only once the header
    pixel counts of the images being decoded, its own included, fit in the budget
    (first come, first served; an image bigger than the whole budget runs alone). Peak
    memory then follows the budget, not the batch's images. None means ``2 * max_pixels``:
    two of the largest allowed images at once. A budget pixel costs 4 bytes at peak for
    RGB, 8 for RGBA and 9 for palette images with transparency (JPEGs count at the
    reduced size libjpeg decodes them at), so the default at 40 MP is at most ~0.7 GB.
    """
    if size < 1:
        raise ValueError(f"size must be positive, got {size}")
    budget = PixelBudget(2 * max_pixels if pixel_budget is None else pixel_budget)

    def one(data: bytes | ItemError) -> np.ndarray | ItemError:
        if isinstance(data, ItemError):
            return data
        try:
            return _decode(
                data, size=size, max_pixels=max_pixels, max_frames=max_frames, budget=budget
            )
        except ItemError as e:
            return e

    if workers <= 1 or len(blobs) <= 1:
        return {key: one(data) for key, data in blobs.items()}
    with ThreadPoolExecutor(max_workers=min(workers, len(blobs))) as pool:
        results = pool.map(one, blobs.values())
        return dict(zip(blobs.keys(), results, strict=True))


# --- helpers ---------------------------------------------------------------------------


def _decode(
    data: bytes, *, size: int, max_pixels: int, max_frames: int, budget: PixelBudget | None
) -> np.ndarray:
    if not data:
        raise NotAnImage("empty file (0 bytes)")
    _ensure_bomb_warning_is_error()
    img = _open(data, size=size, max_pixels=max_pixels, max_frames=max_frames)
    # After draft() a JPEG's size is the reduced size it will actually decode at.
    held = budget.hold(img.width * img.height) if budget else nullcontext()
    with img, held, _as_item_error(f"{img.format} data is damaged", max_pixels):
        img.load()
        orientation = _orientation(img)
        rgb = image_modes.to_rgb(image_modes.shrink(image_modes.fix_transparency(img), size))
        if rgb.size != (size, size):
            rgb = rgb.resize((size, size), RESAMPLE)
        # Squashing to a square commutes with these flips and quarter turns, so they are
        # applied last, to the small image, instead of copying the full-size one.
        if orientation is not None:
            rgb = rgb.transpose(orientation)
        return np.array(rgb, dtype=np.uint8)


def _open(data: bytes, *, size: int, max_pixels: int, max_frames: int) -> Image.Image:
    """Open and check the header: format, pixel and frame counts. Nothing is decoded yet."""
    if data.startswith(PNG_SIGNATURE):
        damage = png_damage(data)
        if damage:
            raise CorruptImage(f"PNG file is damaged: {damage}")
    claimed = _claimed_format(data)
    with _as_item_error(f"unreadable {claimed or 'image'} header", max_pixels):
        try:
            img = Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
        except UnidentifiedImageError:
            if claimed:
                # The magic number is right, the plugin could not parse what follows.
                raise CorruptImage(f"unreadable {claimed} header") from None
            raise NotAnImage(_not_an_image_message(data)) from None
        width, height = img.size
        if width < 1 or height < 1:
            raise CorruptImage(f"image header says {width}x{height} px")
        if width * height > max_pixels:
            raise TooLarge(
                f"image is {width}x{height} px ({width * height / 1e6:.1f} MP), "
                f"limit {max_pixels / 1e6:.1f} MP"
            )
        frames = _declared_frames(img)
        if frames > max_frames:
            raise TooLarge(f"animation has {frames} frames, limit {max_frames}")
        if img.format == "JPEG" or img.format == "MPO":
            # Let libjpeg decode at 1/2, 1/4 or 1/8 scale when the target is that much
            # smaller: several times faster for big product photos, and the result is never
            # smaller than the requested size (exif rotation does not matter: it is square).
            img.draft("RGB", (size, size))
    return img


def _declared_frames(img: Image.Image) -> int:
    # Only where the file states the count: APNG's acTL, animated WebP (libwebp's demuxer
    # counts the frames in C when the file is opened), MPO's index. A GIF states none:
    # Pillow's n_frames walks every data sub-block of every frame in Python, which costs
    # time in proportion to the file for nothing, since only the first frame is decoded.
    if img.format == "GIF":
        return 1
    frames = getattr(img, "n_frames", 1)
    return frames if isinstance(frames, int) else 1


@contextmanager
def _as_item_error(what: str, max_pixels: int) -> Iterator[None]:
    """Turn whatever Pillow raises inside the block into the ItemError it means for the item."""
    try:
        yield
    except ItemError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise TooLarge(_bomb_message(e, max_pixels)) from None
    except MemoryError:
        raise TooLarge(f"{what}: not enough memory to decode it") from None
    except Exception as e:
        if _not_the_images_fault(e):
            raise
        # Pillow's decoders raise OSError, SyntaxError, ValueError, struct.error, EOFError,
        # IndexError, KeyError, TypeError, ZeroDivisionError... on hostile data; listing
        # them is a game of whack-a-mole, and any of them means this image is unusable.
        # BaseException-only signals (KeyboardInterrupt, SystemExit) are not caught.
        raise CorruptImage(f"{what}: {_short(e)}") from None


def _not_the_images_fault(e: Exception) -> bool:
    # Celery's soft time limit raises SoftTimeLimitExceeded (an Exception) from a signal
    # handler into whatever the main thread runs, possibly a decode. It is the batch's
    # deadline, not this image's damage, so it must propagate. Matched by module so this
    # file stays free of Celery imports.
    return type(e).__module__.partition(".")[0] in ("billiard", "celery")


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


def _claimed_format(data: bytes) -> str | None:
    for magic, name in _SIGNATURES:
        if data.startswith(magic):
            return name
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return None


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


def _orientation(img: Image.Image) -> Image.Transpose | None:
    # Phone and camera shots are often stored sideways with an EXIF Orientation tag.
    # Broken EXIF blocks are common and harmless for the pixels, so they must not cost
    # the item: keep the stored orientation instead.
    try:
        return _TRANSPOSE.get(img.getexif().get(ExifTags.Base.Orientation, 1))
    except Exception as e:
        if _not_the_images_fault(e):
            raise
        return None
