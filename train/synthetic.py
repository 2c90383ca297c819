"""A deterministic synthetic fashion catalogue in the DeepFashion-MultiModal layout.

``generate`` draws each product type as its own garment silhouette (dress = long
flared trapezoid, pants = two long legs, hoodie = long sleeves + hood, ...) with
fabric texture, colour noise, position/scale/rotation jitter and a studio background.
Gender carries a cue learnable from the image alone: a palette family (warm for WOMEN,
cool and darker for MEN) plus a trim (a row of dots for WOMEN, a solid band for MEN).
Same seed, same files, byte for byte: every item draws from its own seeded generator.
Pure numpy/Pillow, so it runs (and tests) without TensorFlow.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from train.garments import NOUNS, SHAPES, Garment
from train.model import GENDER_LABELS, PRODUCT_LABELS
