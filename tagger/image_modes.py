"""Any Pillow image mode our formats give -> 8-bit RGB over white, and big decoded images
box-reduced first so that only the decoded image itself is ever full size. Pure: Pillow
and numpy only; used by :mod:`tagger.images`."""

from __future__ import annotations

import numpy as np
from PIL import Image

# Big images are first box-reduced by whole factors to at least this many times the
# target size, then resampled. Pillow's own ``resize(reducing_gap=2.0)`` uses the same
# rule; its docs call the result indistinguishable from a full resample in most cases.
REDUCING_GAP = 2

# Background for transparent pixels: catalogue cut-outs are shown on white.
BACKGROUND = (255, 255, 255)


def fix_transparency(img: Image.Image) -> Image.Image:
    """Drop palette transparency entries no pixel can use (in place; returns ``img``)."""
    # A palette has at most 256 entries, but a PNG tRNS chunk can be longer, and Pillow's
    # convert() then fails ("palette index out of range"). Viewers ignore the excess
    # entries, and no pixel can use them, so dropping them gives exactly that picture.
    t = img.info.get("transparency")
    if img.mode == "P" and t is not None:
        if isinstance(t, int) and not 0 <= t < 256:
            del img.info["transparency"]
        elif isinstance(t, bytes) and len(t) > 256:
            img.info["transparency"] = t[:256]
    return img


def shrink(img: Image.Image, size: int) -> Image.Image:
    """Box-reduce a big decoded image by whole factors, keeping at least 2x the target.

    Done before any other conversion so that only the decoded image itself is full size:
    a 36 MP RGBA PNG went through four more full-size copies (EXIF transpose, RGBA
    convert, white background, composite) before it was resized.
    """
    fx = int(img.width / size / REDUCING_GAP) or 1
    fy = int(img.height / size / REDUCING_GAP) or 1
    if fx == 1 and fy == 1:
        return img
    # reduce() averages raw values, which is wrong for palette indices and bilevel
    # pixels, unsupported for 16-bit ones, and would blur a transparent colour key into
    # its neighbours; those few modes get one full-size conversion first. 16-bit grey
    # goes first: converting it to RGBA would clip it (its rare colour key is ignored,
    # at every size, as _to_rgb does).
    if img.mode.startswith("I"):
        if img.mode != "I":
            img = img.convert("I")
    elif img.mode == "P" or "transparency" in img.info:
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    elif img.mode == "1":
        img = img.convert("L")
    return img.reduce((fx, fy))


def to_rgb(img: Image.Image) -> Image.Image:
    """Any mode Pillow gives for our formats -> 8-bit RGB, transparency over white."""
    mode = img.mode
    if mode.startswith("I"):
        # 16-bit greyscale PNG: Pillow's convert() clips to 0..255 instead of scaling,
        # which would turn nearly every pixel white. Scale 0..65535 to 0..255 ourselves.
        # (A tRNS colour key on 16-bit grey, which Pillow cannot convert either, is
        # dropped here: such images are drawn opaque.)
        wide = np.asarray(img).astype(np.int64).clip(0, 65535)
        img = Image.fromarray(((wide * 255 + 32767) // 65535).astype(np.uint8))
        mode = img.mode
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info
    if has_alpha:
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (*BACKGROUND, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if mode != "RGB":
        # CMYK (Adobe JPEGs are un-inverted by Pillow on load), L, 1, P, YCbCr, ...
        return img.convert("RGB")
    return img
