"""A deterministic synthetic fashion catalogue in the DeepFashion-MultiModal layout.

``generate`` draws each product type as its own garment silhouette (dress = long flared
trapezoid, pants = two long legs, hoodie = long sleeves + hood, ...) with fabric texture,
colour noise, position/scale/rotation jitter and a studio background. Gender carries a
cue learnable from the image alone: a palette family (warm and light for WOMEN, cool and
darker for MEN) plus a trim (a row of dots for WOMEN, a solid band for MEN). Captions
name the garment and often the wearer, as DeepFashion's do.

Same seed, same bytes: every item draws from its own generator seeded with (seed, index).
Pure numpy/Pillow, so it runs and tests without TensorFlow.
"""

from __future__ import annotations

import colorsys
import csv
import io
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from tagger import uris
from train.model import GENDER_LABELS, PRODUCT_LABELS

LABELS_FILE = "labels_front.csv"
IMAGES_DIR = "selected_images"
CATALOGUE_FILE = "catalogue.csv"
LABEL_COLUMNS = [
    "image_id",
    "caption",
    "path",
    "gender",
    "product_type",
    "product_id",
    "image_type",
]
CATALOGUE_COLUMNS = ["item_id", "image_uri", "title"]

Poly = list[tuple[float, float]]


def _ell(cx: float, cy: float, rx: float, ry: float, n: int = 24) -> Poly:
    """An ellipse as a polygon, so it rotates with the garment like every other shape."""
    return [
        (cx + rx * math.cos(2 * math.pi * k / n), cy + ry * math.sin(2 * math.pi * k / n))
        for k in range(n)
    ]


def _rect(x0: float, y0: float, x1: float, y1: float) -> Poly:
    return [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]


# Garments in a unit square (x right, y down). body: filled silhouette; cut: holes;
# accent: (colour kind, polygon); lines: (colour kind, polyline); trim: y of the gender
# trim; tex: fabric textures to choose from. Coordinates are data: kept unformatted.
# fmt: off
_TEE = [(.30, .15), (.42, .12), (.58, .12), (.70, .15), (.88, .30), (.80, .40), (.70, .34),
        (.70, .88), (.30, .88), (.30, .34), (.20, .40), (.12, .30)]
_LONG = [(.30, .14), (.42, .12), (.58, .12), (.70, .14), (.82, .30), (.92, .80), (.83, .82),
         (.72, .42), (.72, .86), (.28, .86), (.28, .42), (.17, .82), (.08, .80), (.18, .30)]
_COAT = [(.28, .10), (.42, .08), (.58, .08), (.72, .10), (.84, .26), (.94, .78), (.85, .80),
         (.74, .40), (.76, .96), (.24, .96), (.26, .40), (.15, .80), (.06, .78), (.16, .26)]
_STRAPS = [(.38, .04), (.42, .04), (.44, .15), (.56, .15), (.58, .04), (.62, .04)]
_NECK = _ell(0.5, 0.12, 0.08, 0.05)
_COLLAR = [("light", [(.42, .12), (.50, .20), (.46, .23), (.39, .14)]),
           ("light", [(.58, .12), (.50, .20), (.54, .23), (.61, .14)])]

SHAPES: dict[str, dict] = {
    "Blouses_Shirts": dict(
        body=[_LONG], cut=[_NECK], accent=_COLLAR, trim=.80, tex=("plain", "stripes", "check"),
        lines=[("dark", [(.5, .2), (.5, .86)])], buttons=[(.5, y) for y in (.3, .42, .54, .66)]),
    "Cardigans": dict(
        body=[_LONG], trim=.30, tex=("knit",),
        cut=[[(.42, .12), (.58, .12), (.515, .5), (.515, .86), (.485, .86), (.485, .5)]],
        accent=[("shade", _rect(.28, .80, .72, .86))],
        buttons=[(.46, y) for y in (.56, .66, .76)]),
    "Denim": dict(  # slim jeans
        body=[[(.30, .08), (.70, .08), (.67, .95), (.53, .95), (.5, .34), (.47, .95), (.33, .95)]],
        lines=[("stitch", [(.30, .13), (.70, .13)]), ("stitch", [(.5, .13), (.5, .30)]),
               ("stitch", [(.33, .13), (.41, .23)]), ("stitch", [(.67, .13), (.59, .23)])],
        buttons=[(.5, .105)], trim=.62, tex=("twill",)),
    "Dresses": dict(
        body=[[*_STRAPS, (.64, .34), (.60, .44), (.80, .95), (.20, .95), (.40, .44), (.36, .34)]],
        lines=[("dark", [(.40, .44), (.60, .44)])], trim=.88),
    "Graphic_Tees": dict(body=[_TEE], cut=[_NECK], graphic=True, trim=.82),
    "Jackets_Coats": dict(
        body=[_COAT], trim=.88,
        accent=[("shade", [(.42, .08), (.5, .30), (.40, .30), (.36, .12)]),
                ("shade", [(.58, .08), (.5, .30), (.60, .30), (.64, .12)]),
                ("shade", _rect(.26, .52, .74, .57))],
        lines=[("dark", [(.5, .30), (.5, .96)])],
        buttons=[(.44, .38), (.56, .38), (.44, .68), (.56, .68)]),
    "Jackets_Vests": dict(
        body=[[(.28, .10), (.40, .10), (.5, .42), (.60, .10), (.72, .10), (.70, .24),
               (.74, .84), (.5, .90), (.26, .84), (.30, .24)]], trim=.30,
        lines=[("dark", [(.5, .42), (.5, .90)]), ("dark", [(.33, .64), (.43, .64)]),
               ("dark", [(.57, .64), (.67, .64)])],
        buttons=[(.5, y) for y in (.5, .6, .7, .8)]),
    "Leggings": dict(
        body=[[(.36, .08), (.64, .08), (.66, .30), (.60, .95), (.535, .95), (.5, .36),
               (.465, .95), (.40, .95), (.34, .30)]],
        accent=[("shade", _rect(.36, .08, .64, .13))], trim=.62),
    "Pants": dict(  # wide-leg trousers
        body=[[(.28, .08), (.72, .08), (.82, .95), (.56, .95), (.5, .32), (.44, .95), (.18, .95)]],
        accent=[("shade", _rect(.28, .08, .72, .12))], buttons=[(.5, .10)], trim=.62,
        lines=[("dark", [(.5, .12), (.5, .28)]), ("dark", [(.37, .2), (.35, .95)]),
               ("dark", [(.63, .2), (.68, .95)])]),
    "Rompers_Jumpsuits": dict(
        body=[[*_STRAPS, (.68, .36), (.74, .72), (.55, .72), (.5, .56), (.45, .72),
               (.26, .72), (.32, .36)]],
        accent=[("dark", _rect(.32, .40, .68, .46))], trim=.25),
    "Shirts_Polos": dict(
        body=[_TEE], cut=[_NECK], accent=_COLLAR, trim=.82, tex=("plain", "stripes"),
        lines=[("dark", [(.5, .2), (.5, .34)])], buttons=[(.5, .25), (.5, .31)]),
    "Shorts": dict(
        body=[[(.28, .28), (.72, .28), (.80, .64), (.57, .64), (.5, .44), (.43, .64), (.20, .64)]],
        accent=[("shade", _rect(.28, .25, .72, .30))], lines=[("dark", [(.5, .30), (.5, .42)])],
        trim=.58),
    "Skirts": dict(
        body=[[(.34, .20), (.66, .20), (.88, .80), (.12, .80)]], trim=.72, tex=("plain", "check"),
        accent=[("shade", _rect(.34, .20, .66, .26))],
        lines=[("dark", [(.42, .26), (.34, .80)]), ("dark", [(.5, .26), (.5, .80)]),
               ("dark", [(.58, .26), (.66, .80)])]),
    "Suiting": dict(
        body=[_LONG], trim=.80,
        accent=[("white", [(.38, .12), (.62, .12), (.5, .50)]),
                ("dark", [(.49, .14), (.51, .14), (.525, .40), (.5, .44), (.475, .40)]),
                ("shade", [(.42, .12), (.5, .46), (.42, .40), (.37, .16)]),
                ("shade", [(.58, .12), (.5, .46), (.58, .40), (.63, .16)])],
        lines=[("dark", [(.5, .46), (.5, .86)]), ("dark", [(.33, .66), (.43, .66)])],
        buttons=[(.5, .55), (.5, .66)]),
    "Sweaters": dict(
        body=[_LONG], cut=[_NECK], trim=.40, tex=("knit",),
        accent=[("shade", _rect(.28, .80, .72, .86)),
                ("shade", [(.17, .82), (.08, .80), (.10, .75), (.19, .77)]),
                ("shade", [(.83, .82), (.92, .80), (.90, .75), (.81, .77)])]),
    "Sweatshirts_Hoodies": dict(
        body=[_LONG, _ell(.5, .12, .14, .11)], trim=.46,
        accent=[("dark", _ell(.5, .13, .08, .07)),
                ("shade", [(.36, .60), (.64, .60), (.68, .76), (.32, .76)])],
        lines=[("light", [(.47, .2), (.46, .36)]), ("light", [(.53, .2), (.54, .36)])]),
    "Tees_Tanks": dict(
        body=[[(.30, .08), (.38, .08), (.42, .22), (.58, .22), (.62, .08), (.70, .08),
               (.72, .32), (.74, .88), (.26, .88), (.28, .32)]], trim=.80),
}
# fmt: on

NOUNS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    # product type: (garment nouns, details for "It has ...")
    "Blouses_Shirts": (
        ("blouse", "long-sleeve shirt"),
        ("long sleeves", "a lapel collar", "buttons"),
    ),
    "Cardigans": (("cardigan", "knit cardigan"), ("long sleeves", "an open front", "a V-neck")),
    "Denim": (("pair of jeans", "denim trousers"), ("pockets", "a button fly", "long legs")),
    "Dresses": (("dress", "long dress", "sleeveless dress"), ("thin straps", "a flared skirt")),
    "Graphic_Tees": (("graphic T-shirt", "printed tee"), ("short sleeves", "a crew neckline")),
    "Jackets_Coats": (("coat", "long jacket"), ("long sleeves", "a belt", "lapels")),
    "Jackets_Vests": (("vest", "waistcoat"), ("no sleeves", "a V-neck", "buttons")),
    "Leggings": (("pair of leggings", "pair of tights"), ("tight legs", "an elastic waistband")),
    "Pants": (("pair of trousers", "pair of pants"), ("long legs", "a pressed crease")),
    "Rompers_Jumpsuits": (("romper", "jumpsuit"), ("thin straps", "a belted waist")),
    "Shirts_Polos": (("polo shirt", "short-sleeve shirt"), ("short sleeves", "a polo collar")),
    "Shorts": (("pair of shorts", "pair of short pants"), ("short legs", "a waistband")),
    "Skirts": (("skirt", "short skirt"), ("pleats", "an A-line cut")),
    "Suiting": (("suit jacket", "blazer"), ("a notch lapel", "long sleeves", "a tie")),
    "Sweaters": (("sweater", "jumper"), ("long sleeves", "ribbed cuffs", "a crew neckline")),
    "Sweatshirts_Hoodies": (("hoodie", "hooded sweatshirt"), ("a hood", "a front pocket")),
    "Tees_Tanks": (("tank top", "sleeveless top"), ("no sleeves", "a scoop neckline")),
}
_WEARERS = {
    "WOMEN": ("The lady", "This lady", "The woman", "This female"),
    "MEN": ("The gentleman", "This gentleman", "The man", "This guy"),
}
_HUE_NAMES = [(15, "red"), (40, "orange"), (70, "yellow"), (160, "green"), (200, "teal"),
              (255, "blue"), (290, "purple"), (345, "pink"), (361, "red")]  # fmt: skip
_PATTERNS = {
    "plain": "solid color patterns",
    "stripes": "striped patterns",
    "check": "plaid patterns",
    "knit": "knitting fabric",
    "twill": "denim fabric",
}


def generate(
    out_dir: Path | str,
    *,
    n: int,
    seed: int = 42,
    image_size: int = 128,
    products: Sequence[str] | None = None,
) -> Path:
    """Write ``n`` labelled items under ``out_dir``; returns ``out_dir``.

    Files: ``labels_front.csv`` (DeepFashion-MultiModal columns), ``selected_images/*.jpg``
    and ``catalogue.csv`` (item_id, image_uri, title) ready for ``tagger import``.
    ``products`` restricts the product types drawn (default: all 17), e.g. for tiny tests.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if image_size < 16:
        raise ValueError(f"image_size must be at least 16, got {image_size}")
    products = list(products) if products is not None else PRODUCT_LABELS
    unknown = sorted(set(products) - set(SHAPES))
    if unknown or not products:
        raise ValueError(f"unknown product types {unknown}; choose from {sorted(SHAPES)}")
    out_dir = Path(out_dir)
    images_dir = out_dir / IMAGES_DIR
    images_dir.mkdir(parents=True, exist_ok=True)

    rows: list[dict[str, str]] = []
    for i, (gender, product) in enumerate(_balanced_labels(n, seed, products)):
        rng = np.random.default_rng([seed, i])
        product_id = f"id_{i + 1:08d}"
        name = f"{gender}-{product}-{product_id}-01_1_front.jpg"
        image, texture, colour = _render(rng, gender, product, image_size)
        # Fixed JPEG settings: Pillow's encoder is deterministic for identical pixels.
        image.save(images_dir / name, format="JPEG", quality=90, subsampling=0)
        rows.append(
            {
                "image_id": name.removesuffix(".jpg"),
                "caption": _caption(rng, gender, product, texture, colour),
                "path": name,
                "gender": gender,
                "product_type": product,
                "product_id": product_id,
                "image_type": "front",
            }
        )

    with open(out_dir / LABELS_FILE, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=LABEL_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    with open(out_dir / CATALOGUE_FILE, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(CATALOGUE_COLUMNS)
        for r in rows:
            uri = str((images_dir / r["path"]).resolve())
            writer.writerow([r["image_id"], uri, r["caption"]])
    return out_dir


def _balanced_labels(n: int, seed: int, products: Sequence[str]) -> list[tuple[str, str]]:
    """Cycle through every (gender, product type) pair, each cycle shuffled by the seed.

    With all 17 types, any 34 consecutive items from the start of a cycle hold every pair
    once, so small sets stay balanced.
    """
    pairs = [(g, p) for g in GENDER_LABELS for p in products]
    rng = np.random.default_rng(seed)
    out: list[tuple[str, str]] = []
    while len(out) < n:
        out.extend(pairs[k] for k in rng.permutation(len(pairs)))
    return out[:n]


def _palette(rng: np.random.Generator, gender: str) -> tuple[float, float, float]:
    """HSV colour from the gender's family: warm and light (WOMEN), cool and dark (MEN)."""
    if gender == "WOMEN":
        return (rng.uniform(-65, 25) % 360, rng.uniform(0.35, 0.8), rng.uniform(0.65, 0.95))
    return (rng.uniform(170, 250), rng.uniform(0.2, 0.6), rng.uniform(0.25, 0.62))


def _rgb(hsv: tuple[float, float, float]) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(hsv[0] / 360, hsv[1], hsv[2])) * 255


def _texture(rng: np.random.Generator, kind: str, d: int) -> np.ndarray:
    """A (d, d) brightness factor around 1 for the fabric."""
    yy, xx = np.mgrid[0:d, 0:d] / d
    shade = 1.0 + rng.uniform(-0.08, 0.08) * (xx - 0.5) + rng.uniform(-0.08, 0.08) * (yy - 0.5)
    if kind == "knit":  # coarse enough to survive downsampling to 64 px
        return shade * (1 + 0.16 * np.sin(2 * np.pi * yy * rng.uniform(11, 14)))
    if kind == "twill":
        return shade * (1 + 0.14 * np.sin(2 * np.pi * (xx + yy) * rng.uniform(24, 32)))
    k = rng.uniform(6, 12)
    stripes = np.sin(2 * np.pi * (xx if rng.random() < 0.5 else yy) * k) > 0
    if kind == "stripes":
        return shade * np.where(stripes, 1.0, 0.7)
    if kind == "check":
        other = np.sin(2 * np.pi * (yy if rng.random() < 0.5 else xx) * k) > 0
        return shade * np.where(stripes ^ other, 1.0, 0.72)
    return shade


def _render(
    rng: np.random.Generator, gender: str, product: str, size: int
) -> tuple[Image.Image, str, tuple[float, float, float]]:
    spec = SHAPES[product]
    d = size * 2  # draw at twice the size and downsample: cheap anti-aliasing
    # Studio background: light neutral, a vertical gradient and sensor-like noise.
    ys = np.linspace(-1, 1, d)[:, None, None]
    bg = (rng.uniform(0.78, 0.97) + rng.normal(0, 0.02, 3) + ys * rng.uniform(-0.06, 0.06)) * 255
    bg = np.broadcast_to(bg, (d, d, 3)) + rng.normal(0, 3, (d, d, 3))

    hsv = _palette(rng, gender)
    base = _rgb(hsv)
    if product == "Denim":  # denim stays denim-blue, tinted by the gender palette
        base = 0.7 * _rgb((215, 0.55, rng.uniform(0.4, 0.7))) + 0.3 * base
        hsv = (215.0, 0.55, 0.55)
    kind = spec.get("tex", ("plain",))[int(rng.integers(len(spec.get("tex", ("plain",)))))]
    fabric = base * _texture(rng, kind, d)[..., None] + rng.normal(0, 4, (d, d, 3))
    canvas = Image.fromarray(np.clip(fabric, 0, 255).astype(np.uint8))

    # Jitter: scale, rotation and position, so silhouettes are not pixel templates.
    s, ang = rng.uniform(0.76, 0.92) * d, math.radians(rng.uniform(-5, 5))
    cx, cy = (0.5 + rng.uniform(-0.05, 0.05)) * d, (0.5 + rng.uniform(-0.04, 0.04)) * d
    cos, sin = math.cos(ang), math.sin(ang)

    def tf(poly: Poly, wobble: float = 0.0) -> list[tuple[float, float]]:
        out = []
        for x, y in poly:
            u, v = x - 0.5 + rng.normal(0, wobble), y - 0.5 + rng.normal(0, wobble)
            out.append((cx + s * (u * cos - v * sin), cy + s * (u * sin + v * cos)))
        return out

    colours = {
        "shade": tuple(int(c) for c in base * 0.8),
        "dark": tuple(int(c) for c in base * 0.45),
        "light": tuple(int(c) for c in base * 0.5 + 127),
        "white": (240, 240, 236),
        "stitch": (205, 150, 70),
    }
    draw = ImageDraw.Draw(canvas)
    for ck, poly in spec.get("accent", []):
        draw.polygon(tf(poly), fill=colours[ck])
    if spec.get("graphic"):
        contrast = tuple(int(c) for c in _rgb(((hsv[0] + 180) % 360, 0.7, rng.uniform(0.3, 0.9))))
        r, sides = rng.uniform(0.11, 0.16), int(rng.choice([3, 4, 5, 24]))
        draw.polygon(tf(_ell(0.5, 0.48, r, r, n=sides)), fill=contrast)
    width = max(1, round(0.012 * s))
    for ck, line in spec.get("lines", []):
        draw.line(tf(line), fill=colours[ck], width=width)
    for bx, by in spec.get("buttons", []):
        draw.polygon(tf(_ell(bx, by, 0.013, 0.013, n=10)), fill=colours["light"])
    # The gender trim, clipped to the garment by the mask below.
    ty = spec["trim"]
    if gender == "WOMEN":
        for x in np.arange(0.04, 0.97, 0.055):
            draw.polygon(tf(_ell(float(x), ty, 0.017, 0.017, n=12)), fill=(250, 244, 232))
    else:
        band = colours["dark"] if hsv[2] > 0.45 else (205, 210, 216)
        draw.polygon(tf(_rect(0.0, ty - 0.022, 1.0, ty + 0.022)), fill=band)

    mask = Image.new("L", (d, d), 0)
    mdraw = ImageDraw.Draw(mask)
    for poly in spec["body"]:
        mdraw.polygon(tf(poly, wobble=0.006), fill=255)
    for poly in spec.get("cut", []):
        mdraw.polygon(tf(poly), fill=0)
    m = np.asarray(mask.filter(ImageFilter.GaussianBlur(1)), dtype=np.float32)[..., None] / 255
    out = bg * (1 - m) + np.asarray(canvas, dtype=np.float32) * m
    image = Image.fromarray(np.clip(out, 0, 255).astype(np.uint8))
    return image.resize((size, size), Image.Resampling.LANCZOS), kind, hsv


def _colour_name(hsv: tuple[float, float, float]) -> str:
    h, s, v = hsv
    name = "grey" if s < 0.22 else next(label for limit, label in _HUE_NAMES if h < limit)
    if v < 0.4:
        return f"dark {name}"
    return f"light {name}" if v > 0.85 and s < 0.5 else name


def _caption(
    rng: np.random.Generator,
    gender: str,
    product: str,
    texture: str,
    hsv: tuple[float, float, float],
) -> str:
    nouns, details = NOUNS[product]
    noun = nouns[int(rng.integers(len(nouns)))]
    colour = _colour_name(hsv)
    article = "an" if colour[0] in "aeiou" else "a"
    if rng.random() < 0.6:  # DeepFashion captions usually name the wearer
        wearer = _WEARERS[gender][int(rng.integers(len(_WEARERS[gender])))]
        first = f"{wearer} wears {article} {colour} {noun}."
    else:
        first = f"This {noun} is {colour}."
    picked = rng.permutation(len(details))[: int(rng.integers(1, 3))]
    second = "It has " + " and ".join(details[k] for k in sorted(picked)) + "."
    sentences = [first, second]
    if rng.random() < 0.5:
        sentences.append(f"It is with {_PATTERNS[texture]}.")
    return " ".join(sentences)


def upload(out_dir: Path | str, s3_uri: str, s3_client) -> int:
    """Copy a generated catalogue to ``s3://bucket/prefix/``; returns the object count.

    Uploads ``labels_front.csv``, ``selected_images/*`` and a ``catalogue.csv`` whose
    ``image_uri`` column points at the uploaded images, ready for ``tagger import``.
    """
    folder = uris.s3_folder(s3_uri)
    if folder is None:
        raise ValueError(f"expected s3://bucket/prefix/, got {s3_uri!r}")
    bucket, prefix = folder  # prefix ends in "/" (or is "" for the bucket's root)
    out_dir = Path(out_dir)
    count = 0
    for image in sorted((out_dir / IMAGES_DIR).iterdir()):
        key = f"{prefix}{IMAGES_DIR}/{image.name}"
        s3_client.upload_file(str(image), bucket, key, ExtraArgs={"ContentType": "image/jpeg"})
        count += 1
    s3_client.upload_file(str(out_dir / LABELS_FILE), bucket, f"{prefix}{LABELS_FILE}")
    with open(out_dir / LABELS_FILE, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CATALOGUE_COLUMNS)
    for r in rows:
        writer.writerow(
            [r["image_id"], uris.s3_uri(bucket, f"{prefix}{IMAGES_DIR}/{r['path']}"), r["caption"]]
        )
    s3_client.put_object(
        Bucket=bucket, Key=f"{prefix}{CATALOGUE_FILE}", Body=buf.getvalue().encode("utf-8")
    )
    return count + 2
