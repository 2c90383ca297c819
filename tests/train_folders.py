"""Test data for the trainer's tests: a tiny folder in the exact DeepFashion-MultiModal layout."""

from __future__ import annotations

import csv
from pathlib import Path

from PIL import Image

from train.synthetic import generate

# Real DeepFashion-MultiModal rows look like this (captions shortened); its images are
# 750x1101 portraits, non-square here too so the worker's squash resize is exercised.
DEEPFASHION_ROWS = [
    ("MEN", "Denim", "The gentleman wears a long-sleeve shirt and long denim pants."),
    ("WOMEN", "Denim", "The lady wears a tank top and long denim pants."),
    ("WOMEN", "Dresses", "The lady wears a sleeveless dress with graphic patterns."),
    ("MEN", "Dresses", "This person wears a long dress with pure color patterns."),
    ("MEN", "Tees_Tanks", "This man wears a short-sleeve T-shirt with pure color patterns."),
    ("WOMEN", "Tees_Tanks", "Her tank top is with cotton fabric and solid color patterns."),
    ("WOMEN", "Skirts", "This female is wearing a short skirt with plaid patterns."),
    ("MEN", "Skirts", "The person wears a short skirt. It has a belt."),
]
PRODUCTS = sorted({p for _, p, _ in DEEPFASHION_ROWS})
HEADER = ["image_id", "caption", "path", "gender", "product_type", "product_id", "image_type"]


def deepfashion_folder(root: Path, *, copies: int = 3) -> Path:
    """``root/labels_front.csv`` + ``root/selected_images/`` with ``8 * copies`` rows,
    laid out as DeepFashion-MultiModal's; images drawn by the synthetic generator."""
    synth = generate(root / "synth", n=8 * copies, seed=9, image_size=48, products=PRODUCTS)
    with open(synth / "labels_front.csv", newline="") as f:
        drawn = list(csv.DictReader(f))
    images = root / "selected_images"
    images.mkdir(parents=True)
    rows = []
    for i, (gender, product, caption) in enumerate(DEEPFASHION_ROWS * copies):
        src = next(r for r in drawn if (r["gender"], r["product_type"]) == (gender, product))
        drawn.remove(src)
        pid = f"id_{i + 80:08d}"
        name = f"{gender}-{product}-{pid}-01_1_front.jpg"
        with Image.open(synth / "selected_images" / src["path"]) as im:
            im.resize((51, 75)).save(images / name, quality=90)
        rows.append([name.removesuffix(".jpg"), caption, name, gender, product, pid, "front"])
    with open(root / "labels_front.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(HEADER)
        writer.writerows(rows)
    return root
