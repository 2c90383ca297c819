"""Labelled data for training and evaluation: CSV readers, the split, the tf.data pipeline.

Two layouts are read as they are:

* DeepFashion-MultiModal ``labels_front.csv``: ``image_id, caption, path, gender,
  product_type, product_id, image_type``; each image is ``IMAGES_DIR/path``.
* the project's catalogue CSV with label columns: ``item_id, image_uri, title`` (or
  ``caption``), ``gender, product_type``; ``image_uri`` is a local path (relative ones
  are relative to ``IMAGES_DIR``) or ``file://``.

Every problem is a :class:`DataError` that names the file and line. Images are decoded
with the worker's own :func:`tagger.images.decode_image`, so training sees exactly the
pixels the service will feed the model (no train/serve skew).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from tagger.artifacts import CAPTION_INPUT, GENDER_HEAD, IMAGE_INPUT, PRODUCT_HEAD
from tagger.images import decode_image
from tagger.uris import file_url_path, looks_like_url, url_scheme

if TYPE_CHECKING:
    import tensorflow as tf

#: Same default as TAGGER_MAX_IMAGE_PIXELS: training accepts what the workers accept.
MAX_PIXELS = 40_000_000
#: Decoded images are kept in memory after the first epoch below this many bytes.
CACHE_LIMIT_BYTES = 2_000_000_000
DEEPFASHION = "DeepFashion-MultiModal labels_front.csv"
CATALOGUE = "catalogue CSV with labels"
_LABEL_COLUMNS = ("gender", "product_type")
_EXPECTED = (
    "expected DeepFashion-MultiModal labels_front.csv columns (image_id, caption, path, "
    "gender, product_type, ...) or a catalogue CSV (item_id, image_uri, title, gender, "
    "product_type)"
)


class DataError(ValueError):
    """Bad training or evaluation input; the message names the file and row."""


@dataclass(frozen=True)
class Example:
    line: int  # line of the CSV (the header is line 1)
    ref: str  # image_id or item_id
    image: Path
    caption: str
    gender: str
    product: str

    def where(self, source: str) -> str:
        return f"{source} line {self.line} ({self.ref})"


@dataclass(frozen=True)
class LabelledSet:
    source: str
    layout: str
    examples: list[Example]


def read_labelled(path: Path | str, images_dir: Path | str | None = None) -> LabelledSet:
    """Read and check a labels CSV; every image file must exist."""
    import csv

    path = Path(path)
    source = str(path)
    if not path.is_file():
        raise DataError(f"labels file not found: {path}")
    if images_dir is None:
        default = path.parent / "selected_images"
        images_dir = default if default.is_dir() else path.parent
    images_dir = Path(images_dir)
    if not images_dir.is_dir():
        raise DataError(f"images folder not found: {images_dir}")
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        header = [h.strip() for h in reader.fieldnames or []]
        reader.fieldnames = header
        layout = _layout(header, source)
        examples = []
        for row in reader:
            if not any((v or "").strip() for v in row.values() if isinstance(v, str)):
                continue
            examples.append(_example(row, reader.line_num, layout, images_dir, source))
    if not examples:
        raise DataError(f"{source}: no labelled rows")
    missing = [e for e in examples if not e.image.is_file()]
    if missing:
        more = (
            f" (and {len(missing) - 1} more rows with missing images)" if len(missing) > 1 else ""
        )
        raise DataError(
            f"{missing[0].where(source)}: image file not found: {missing[0].image}{more}"
        )
    return LabelledSet(source=source, layout=layout, examples=examples)


def _layout(header: list[str], source: str) -> str:
    found = ", ".join(header) or "nothing"
    if {"image_id", "path"} <= set(header):
        layout = DEEPFASHION
    elif {"item_id", "image_uri"} <= set(header):
        layout = CATALOGUE
    else:
        raise DataError(f"{source} line 1: unknown column layout (found: {found}); {_EXPECTED}")
    missing = [c for c in _LABEL_COLUMNS if c not in header]
    if missing:
        raise DataError(
            f"{source} line 1: {layout} without label column(s) {', '.join(missing)} "
            f"(found: {found})"
        )
    return layout


def _example(row: dict, line: int, layout: str, images_dir: Path, source: str) -> Example:
    def cell(name: str) -> str:
        value = row.get(name)
        return value.strip() if isinstance(value, str) else ""

    if None in row:
        raise DataError(f"{source} line {line}: more cells than header columns")
    if layout == DEEPFASHION:
        ref, rel = cell("image_id"), cell("path")
        caption = cell("caption")
        if not rel:
            raise DataError(f"{source} line {line} ({ref}): path is empty")
        image = images_dir / rel
    else:
        ref, uri = cell("item_id"), cell("image_uri")
        caption = cell("title") or cell("caption")
        image = _local_image(uri, images_dir, f"{source} line {line} ({ref})")
    for column in _LABEL_COLUMNS:
        if not cell(column):
            raise DataError(f"{source} line {line} ({ref}): {column} is empty")
    return Example(line, ref, image, caption, cell("gender"), cell("product_type"))


def _local_image(uri: str, images_dir: Path, where: str) -> Path:
    if not uri:
        raise DataError(f"{where}: image_uri is empty")
    path = file_url_path(uri)
    if path is not None:
        return path
    # Any other "://" is remote (or a typo); a bare "name:x.jpg" is still a file name here.
    if looks_like_url(uri):
        raise DataError(
            f"{where}: {url_scheme(uri)}:// images are not read by the trainer; copy them to a "
            "local folder first (e.g. aws s3 sync) and point image_uri at the files"
        )
    return Path(uri) if Path(uri).is_absolute() else images_dir / uri


# --- labels and the split -----------------------------------------------------------------


def label_lists(examples: Sequence[Example]) -> tuple[list[str], list[str]]:
    """Sorted gender and product-type labels found in the data."""
    return sorted({e.gender for e in examples}), sorted({e.product for e in examples})


def split(data: LabelledSet, *, val_split: float, seed: int) -> tuple[list[Example], list[Example]]:
    """A fixed random split (like the notebook's train_test_split(random_state=seed))."""
    if not 0.0 < val_split < 1.0:
        raise DataError(f"--val-split must be between 0 and 1, got {val_split}")
    n = len(data.examples)
    n_val = round(n * val_split)
    if n_val == 0 or n_val == n:
        empty = "validation" if n_val == 0 else "training"
        raise DataError(
            f"{data.source}: the {empty} split is empty ({n} rows with --val-split "
            f"{val_split}); add rows or change --val-split"
        )
    order = np.random.default_rng(seed).permutation(n)
    val = sorted(order[:n_val].tolist())
    train = sorted(order[n_val:].tolist())
    return [data.examples[i] for i in train], [data.examples[i] for i in val]


def check_training_classes(
    train: Sequence[Example], val: Sequence[Example], source: str
) -> tuple[list[str], list[str]]:
    """Label lists of the whole set; every class must have a training example."""
    genders, products = label_lists([*train, *val])
    seen = {"gender": {e.gender for e in train}, "product_type": {e.product for e in train}}
    for column, labels in (("gender", genders), ("product_type", products)):
        for label in labels:
            if label in seen[column]:
                continue
            rows = [e for e in val if (e.gender if column == "gender" else e.product) == label]
            lines = ", ".join(str(e.line) for e in rows[:5])
            raise DataError(
                f"{source}: {column} {label!r} has no examples in the training split (its "
                f"rows, line {lines}, all fell in the validation split); add rows of it or "
                "change --seed / --val-split"
            )
    return genders, products


def encode(
    examples: Sequence[Example],
    gender_labels: Sequence[str],
    product_labels: Sequence[str],
    source: str,
) -> tuple[np.ndarray, np.ndarray]:
    """(gender indices, product indices); a label the model does not know names its row."""
    g_index = {label: i for i, label in enumerate(gender_labels)}
    p_index = {label: i for i, label in enumerate(product_labels)}
    genders, products = [], []
    for e in examples:
        for value, index, column in (
            (e.gender, g_index, "gender"),
            (e.product, p_index, "product_type"),
        ):
            if value not in index:
                raise DataError(
                    f"{e.where(source)}: {column} {value!r} is not one of the model's labels "
                    f"({', '.join(index)})"
                )
        genders.append(g_index[e.gender])
        products.append(p_index[e.product])
    return np.array(genders, np.int64), np.array(products, np.int64)


# --- images and tf.data -----------------------------------------------------------------------


def load_image(example: Example, size: int, source: str = "") -> np.ndarray:
    """The (size, size, 3) uint8 array the worker would make from this file."""
    try:
        data = example.image.read_bytes()
        return decode_image(data, size=size, max_pixels=MAX_PIXELS)
    except Exception as e:
        raise DataError(f"{example.where(source)}: cannot use {example.image}: {e}") from e


#: Augmentation ranges, as the design defines: rotation in turns, zoom as a scale share.
ROTATION_TURNS = 0.05
ZOOM = 0.1


def augment_batch(images: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """Random horizontal flip, rotation (+-0.05 of a turn) and zoom (+-10%) of a float
    image batch, drawn statelessly from ``seed`` (a [2] int tensor), so the same seed gives
    the same batch whatever thread or order tf.data runs it in.

    Flip, rotation and zoom are one affine resample (bilinear) about the image centre;
    edges are filled with the nearest pixel so the studio background stays a background.
    (Keras's RandomFlip/RandomRotation/RandomZoom layers draw from a shared seed variable,
    which a parallel map reads in whatever order its threads run: not reproducible.)
    """
    import math

    import tensorflow as tf

    shape = tf.shape(images)
    batch, height, width = shape[0], shape[1], shape[2]
    u = tf.random.stateless_uniform(tf.stack([batch, 3]), seed=seed)
    flip = tf.where(u[:, 0] < 0.5, -1.0, 1.0)
    angle = (2.0 * u[:, 1] - 1.0) * (ROTATION_TURNS * 2.0 * math.pi)
    zoom = 1.0 + (2.0 * u[:, 2] - 1.0) * ZOOM  # > 1 samples a larger area: zooms out
    cos, sin = tf.cos(angle) * zoom, tf.sin(angle) * zoom
    # Output pixel (x, y) samples input centre + zoom * rotation @ flip @ ((x, y) - centre).
    a0, a1, b0, b1 = flip * cos, -sin, flip * sin, cos
    cx = (tf.cast(width, tf.float32) - 1.0) / 2.0
    cy = (tf.cast(height, tf.float32) - 1.0) / 2.0
    a2 = cx - (a0 * cx + a1 * cy)
    b2 = cy - (b0 * cx + b1 * cy)
    zeros = tf.zeros_like(a0)
    transforms = tf.stack([a0, a1, a2, b0, b1, b2, zeros, zeros], axis=1)
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=images,
        transforms=transforms,
        output_shape=tf.stack([height, width]),
        fill_value=0.0,
        interpolation="BILINEAR",
        fill_mode="NEAREST",
    )


def make_dataset(
    examples: Sequence[Example],
    *,
    size: int,
    gender_labels: Sequence[str],
    product_labels: Sequence[str],
    use_text: bool,
    batch_size: int,
    training: bool = False,
    seed: int = 42,
    blank_captions: bool = False,
    caption_dropout: float = 0.0,
    repeat: bool = False,
    source: str = "",
) -> tf.data.Dataset:
    """Batches of ``({"image", ["caption"]}, {"gender", "product"})``.

    Images are decoded in parallel (Pillow releases the GIL), cached in memory when they
    fit, then shuffled, batched, augmented (``training`` only) and prefetched. Captions
    are blanked for the image-only figures; ``caption_dropout`` blanks a random share of
    training captions so a text model also learns to tag images that have none.

    Deterministic for a ``seed``: the shuffle is seeded, parallel maps keep their order,
    and every random draw (augmentation, caption dropout) is stateless, seeded by
    ``(seed, batch number)``. ``repeat`` makes a training set endless (each pass
    reshuffled) with the batch number running on across passes, so no two epochs augment
    alike; a dataset repeated outside would restart the batch numbers every pass.
    """
    import tensorflow as tf

    from train.metrics import one_hot

    examples = list(examples)
    n = len(examples)
    if n == 0:
        raise DataError(f"{source}: no examples to make a dataset from")
    gender_idx, product_idx = encode(examples, gender_labels, product_labels, source)
    y_gender = tf.constant(one_hot(gender_idx, len(gender_labels)))
    y_product = tf.constant(one_hot(product_idx, len(product_labels)))
    captions = tf.constant(["" if blank_captions else e.caption for e in examples])

    def decode(i: np.ndarray) -> np.ndarray:
        return load_image(examples[int(i)], size, source)

    def decode_tf(i: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        image = tf.numpy_function(decode, [i], tf.uint8, stateful=False)
        return tf.ensure_shape(image, (size, size, 3)), i

    ds = tf.data.Dataset.range(n).map(
        decode_tf, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
    )
    if n * size * size * 3 <= CACHE_LIMIT_BYTES:
        ds = ds.cache()
    if training:
        ds = ds.shuffle(n, seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size)
    if repeat:
        ds = ds.repeat()

    def to_inputs(step: tf.Tensor, batch: tuple[tf.Tensor, tf.Tensor]):
        images, idx = batch
        x = tf.cast(images, tf.float32)
        if training:
            batch_seed = tf.stack([tf.constant(seed, tf.int64), step])
            augment_seed, caption_seed = tf.unstack(
                tf.random.experimental.stateless_split(batch_seed, num=2)
            )
            x = augment_batch(x, augment_seed)
        inputs = {IMAGE_INPUT: x}
        if use_text:
            text = tf.gather(captions, idx)
            if training and caption_dropout > 0:
                draw = tf.random.stateless_uniform(tf.shape(text), seed=caption_seed)
                text = tf.where(draw >= caption_dropout, text, tf.constant(""))
            inputs[CAPTION_INPUT] = tf.reshape(text, (-1, 1))
        labels = {GENDER_HEAD: tf.gather(y_gender, idx), PRODUCT_HEAD: tf.gather(y_product, idx)}
        return inputs, labels

    ds = ds.enumerate().map(to_inputs, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.prefetch(tf.data.AUTOTUNE)
