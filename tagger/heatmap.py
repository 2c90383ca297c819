"""A confusion matrix drawn as a PNG heat map with Pillow (a service dependency already;
matplotlib is only in the trainer's extra): class names on both axes, the count in every
non-empty cell, each cell coloured by its share of its row, the diagonal outlined, a total
per row and a colour scale.

Rows are the baseline's classes (the active version), columns the candidate's: a row shows
where the items the active version called X went under the candidate. Colouring by the
row's share keeps a rare class's row as readable as a common one's.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

#: A sequential blue scale (ColorBrewer "Blues"), from no share of the row to all of it.
SCALE = ((247, 251, 255), (198, 219, 239), (107, 174, 214), (33, 113, 181), (8, 48, 107))
BACKGROUND = (255, 255, 255)
INK = (33, 33, 33)
GRID = (210, 210, 210)
PAD = 12


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)  # Pillow's own TrueType font (FreeType)
    except (TypeError, OSError, AttributeError):  # an old Pillow, or one without FreeType
        return ImageFont.load_default()


def colour(share: float) -> tuple[int, int, int]:
    """The scale's colour for a share of the row in [0, 1], interpolated between stops."""
    share = min(max(share, 0.0), 1.0) * (len(SCALE) - 1)
    i = min(int(share), len(SCALE) - 2)
    t = share - i
    (r0, g0, b0), (r1, g1, b1) = SCALE[i], SCALE[i + 1]
    return round(r0 + (r1 - r0) * t), round(g0 + (g1 - g0) * t), round(b0 + (b1 - b0) * t)


def _ink_on(fill: tuple[int, int, int]) -> tuple[int, int, int]:
    # Relative luminance: white text on the dark end of the scale, dark text elsewhere.
    r, g, b = fill
    return (255, 255, 255) if 0.299 * r + 0.587 * g + 0.114 * b < 140 else INK


def _size(draw: ImageDraw.ImageDraw, text: str, font) -> tuple[int, int]:
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    return int(right - left), int(bottom - top)


def _vertical(text: str, font, fill: tuple[int, int, int]) -> Image.Image:
    """``text`` drawn on its own transparent image, turned to read bottom to top."""
    probe = ImageDraw.Draw(Image.new("RGBA", (1, 1)))
    w, h = _size(probe, text, font)
    image = Image.new("RGBA", (w + 4, h + 8), (0, 0, 0, 0))
    ImageDraw.Draw(image).text((2, 2), text, font=font, fill=fill)
    return image.rotate(90, expand=True)


def draw_confusion(
    path: Path,
    *,
    rows: Sequence[str],
    columns: Sequence[str],
    counts: Sequence[Sequence[int]],
    title: str,
    row_title: str,
    column_title: str,
) -> Path:
    """Draw the matrix ``counts`` (one list per row) to the PNG ``path`` (written under a
    temporary name and renamed, so a reader never sees half a file); returns ``path``."""
    if len(counts) != len(rows) or any(len(r) != len(columns) for r in counts):
        raise ValueError("counts must have one list per row, one count per column")
    font, small, bold = _font(14), _font(12), _font(17)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    totals = [sum(r) for r in counts]
    widest = max([_size(probe, f"{n:,}", font)[0] for r in counts for n in r] + [24])
    cell_w, cell_h = max(46, widest + 14), 30
    label_w = max([_size(probe, name, font)[0] for name in rows] + [40]) + PAD
    header_h = max([_size(probe, name, font)[0] for name in columns] + [40]) + PAD
    total_w = max([_size(probe, f"{n:,}", small)[0] for n in totals] + [30]) + PAD
    title_h = _size(probe, title, bold)[1] + 2 * PAD
    axis = 22  # the axis titles' band, above the column names and left of the row names
    grid_x, grid_y = PAD + axis + label_w, title_h + axis + header_h
    grid_w, grid_h = cell_w * len(columns), cell_h * len(rows)
    bar_x = grid_x + grid_w + total_w + 2 * PAD
    width = bar_x + 18 + 60 + PAD
    height = max(grid_y + grid_h + 2 * PAD, grid_y + 200)
    image = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(image)

    draw.text((PAD, PAD), title, font=bold, fill=INK)
    w, _ = _size(draw, column_title, small)
    draw.text((grid_x + max((grid_w - w) // 2, 0), title_h), column_title, font=small, fill=INK)
    side = _vertical(row_title, small, INK)
    image.paste(*_pasted(side, (PAD, grid_y + max((grid_h - side.height) // 2, 0))))
    for j, name in enumerate(columns):
        label = _vertical(name, font, INK)
        x = grid_x + j * cell_w + (cell_w - label.width) // 2
        image.paste(*_pasted(label, (x, grid_y - label.height - 4)))
    draw.text((grid_x + grid_w + PAD // 2, grid_y - 18), "items", font=small, fill=INK)

    for i, name in enumerate(rows):
        y = grid_y + i * cell_h
        w, h = _size(draw, name, font)
        draw.text((grid_x - w - PAD // 2, y + (cell_h - h) // 2 - 2), name, font=font, fill=INK)
        for j, n in enumerate(counts[i]):
            x = grid_x + j * cell_w
            fill = colour(n / totals[i]) if totals[i] else BACKGROUND
            draw.rectangle((x, y, x + cell_w, y + cell_h), fill=fill, outline=GRID)
            if n:
                text = f"{n:,}"
                tw, th = _size(draw, text, font)
                at = (x + (cell_w - tw) // 2, y + (cell_h - th) // 2 - 2)
                draw.text(at, text, font=font, fill=_ink_on(fill))
        draw.text((grid_x + grid_w + PAD // 2, y + 8), f"{totals[i]:,}", font=small, fill=INK)
    for k in range(min(len(rows), len(columns))):
        if rows[k] == columns[k]:  # the diagonal: where the two versions agree
            x, y = grid_x + k * cell_w, grid_y + k * cell_h
            draw.rectangle((x, y, x + cell_w, y + cell_h), outline=INK, width=2)

    _colour_bar(draw, bar_x, grid_y, max(grid_h, 160), small)
    return _save(image, path)


def _pasted(
    image: Image.Image, at: tuple[int, int]
) -> tuple[Image.Image, tuple[int, int], Image.Image]:
    return image, at, image


def _colour_bar(draw: ImageDraw.ImageDraw, x: int, y: int, height: int, font) -> None:
    """A vertical scale from 0% (bottom) to 100% of the row (top), with ticks."""
    for k in range(height):
        draw.line((x, y + k, x + 18, y + k), fill=colour(1 - k / max(height - 1, 1)))
    draw.rectangle((x, y, x + 18, y + height), outline=GRID)
    for share in (0.0, 0.25, 0.5, 0.75, 1.0):
        ty = y + round((1 - share) * height)
        draw.line((x + 18, ty, x + 22, ty), fill=INK)
        draw.text((x + 25, ty - 7), f"{share:.0%}", font=font, fill=INK)
    draw.text((x - 4, y - 18), "of row", font=font, fill=INK)


def _save(image: Image.Image, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    image.save(partial, format="PNG", optimize=True)
    partial.replace(path)
    return path
