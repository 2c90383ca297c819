"""train.data: the two CSV layouts, row-naming errors, the split and the tf.data pipeline."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from tagger.images import decode_image
from train.data import (
    CATALOGUE,
    DEEPFASHION,
    DataError,
    check_training_classes,
    encode,
    label_lists,
    load_image,
    make_dataset,
    read_labelled,
    split,
)
from train.synthetic import generate

PRODUCTS = ["Dresses", "Pants", "Shorts"]


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    return generate(
        tmp_path_factory.mktemp("data") / "s", n=24, seed=3, image_size=40, products=PRODUCTS
    )


def _write_csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_reads_deepfashion_layout_with_labels_from_data(synth: Path):
    """labels_front.csv is read as is; images default to selected_images/ beside it."""
    data = read_labelled(synth / "labels_front.csv")
    assert data.layout == DEEPFASHION
    assert len(data.examples) == 24
    first = data.examples[0]
    assert first.line == 2 and first.image.parent == synth / "selected_images"
    assert first.caption.endswith(".")
    assert label_lists(data.examples) == (["MEN", "WOMEN"], PRODUCTS)


def test_reads_catalogue_layout_with_label_columns(synth: Path, tmp_path: Path):
    """A catalogue CSV (item_id, image_uri, title, gender, product_type) works too."""
    rows = _rows(synth / "labels_front.csv")
    # Relative paths are relative to the images folder; file:// URIs work as well.
    table = [
        [
            r["image_id"],
            (synth / "selected_images" / r["path"]).as_uri()
            if i % 2
            else f"{synth.name}/selected_images/{r['path']}",
            r["caption"],
            r["gender"],
            r["product_type"],
        ]
        for i, r in enumerate(rows)
    ]
    path = _write_csv(
        tmp_path / "labelled.csv",
        ["item_id", "image_uri", "title", "gender", "product_type"],
        table,
    )
    data = read_labelled(path, images_dir=synth.parent)
    assert data.layout == CATALOGUE
    assert [e.ref for e in data.examples] == [r["image_id"] for r in rows]
    assert all(e.image.is_file() for e in data.examples)
    assert data.examples[0].caption == rows[0]["caption"]


def test_missing_image_names_the_row(synth: Path, tmp_path: Path):
    """A row whose image file is absent is refused by its line and id."""
    rows = _rows(synth / "labels_front.csv")
    rows[4]["path"] = "gone.jpg"
    path = _write_csv(tmp_path / "l.csv", list(rows[0]), [list(r.values()) for r in rows])
    with pytest.raises(
        DataError,
        match=rf"line 6 \({rows[4]['image_id']}\): image file not "
        r"found: .*gone\.jpg",
    ):
        read_labelled(path, synth / "selected_images")


def test_unknown_column_layout_is_refused(tmp_path: Path):
    """A header that is neither layout is refused on line 1, listing what it found."""
    path = _write_csv(tmp_path / "x.csv", ["file", "label"], [["a.jpg", "Dresses"]])
    with pytest.raises(DataError, match=r"line 1: unknown column layout \(found: file, label\)"):
        read_labelled(path)


def test_layout_without_labels_is_refused(tmp_path: Path):
    """A catalogue without gender/product_type columns cannot be trained on."""
    path = _write_csv(tmp_path / "c.csv", ["item_id", "image_uri", "title"], [["a", "a.jpg", ""]])
    with pytest.raises(DataError, match=r"line 1: .*without label column.*gender, product_type"):
        read_labelled(path)


def test_empty_label_names_the_row(synth: Path, tmp_path: Path):
    """An empty product_type cell is refused by its line."""
    rows = _rows(synth / "labels_front.csv")
    rows[2]["product_type"] = ""
    path = _write_csv(tmp_path / "l.csv", list(rows[0]), [list(r.values()) for r in rows])
    with pytest.raises(DataError, match=r"line 4 .*product_type is empty"):
        read_labelled(path, synth / "selected_images")


def test_s3_images_are_refused_with_advice(tmp_path: Path):
    """The trainer reads local files only; an s3:// row says how to proceed."""
    path = _write_csv(
        tmp_path / "c.csv",
        ["item_id", "image_uri", "gender", "product_type"],
        [["a", "s3://bucket/a.jpg", "MEN", "Pants"]],
    )
    with pytest.raises(DataError, match=r"line 2 \(a\): s3:// images .* copy them"):
        read_labelled(path)


def test_split_is_fixed_by_seed_and_disjoint(synth: Path):
    """Same seed, same split; the two parts are disjoint and cover every row."""
    data = read_labelled(synth / "labels_front.csv")
    train, val = split(data, val_split=0.25, seed=42)
    again = split(data, val_split=0.25, seed=42)
    other = split(data, val_split=0.25, seed=43)
    assert (train, val) == again
    assert len(val) == 6 and len(train) == 18
    assert {e.ref for e in train} | {e.ref for e in val} == {e.ref for e in data.examples}
    assert not {e.ref for e in train} & {e.ref for e in val}
    assert other[1] != val


def test_empty_split_is_refused(synth: Path):
    """A validation split that rounds to zero rows is an error naming the file."""
    data = read_labelled(synth / "labels_front.csv")
    with pytest.raises(DataError, match=r"labels_front\.csv: the validation split is empty"):
        split(data, val_split=0.01, seed=1)


def test_class_missing_from_training_split_names_its_rows(synth: Path, tmp_path: Path):
    """A class whose only rows fell in the validation split is refused, naming them."""
    rows = _rows(synth / "labels_front.csv")
    data = read_labelled(synth / "labels_front.csv")
    train, val = split(data, val_split=0.25, seed=42)
    lone = val[0]
    relabelled = [
        e if e is not lone else e.__class__(e.line, e.ref, e.image, e.caption, e.gender, "Skirts")
        for e in val
    ]
    assert rows  # the file itself is untouched: the check works on the split
    with pytest.raises(
        DataError,
        match=rf"product_type 'Skirts' has no examples in the training split .*line "
        rf"{lone.line}\b",
    ):
        check_training_classes(train, relabelled, data.source)


def test_encode_names_unknown_labels(synth: Path):
    """Evaluating on a label the model does not know names the row."""
    data = read_labelled(synth / "labels_front.csv")
    genders, products = encode(data.examples, ["MEN", "WOMEN"], PRODUCTS, data.source)
    assert genders.shape == products.shape == (24,)
    with pytest.raises(DataError, match=r"line 2 .*is not one of the model's labels"):
        encode(data.examples, ["MEN", "WOMEN"], ["Pants"], data.source)


def test_load_image_is_the_workers_decode(synth: Path):
    """Training pixels are exactly what tagger.images.decode_image gives the worker."""
    data = read_labelled(synth / "labels_front.csv")
    e = data.examples[0]
    expected = decode_image(e.image.read_bytes(), size=32, max_pixels=40_000_000)
    np.testing.assert_array_equal(load_image(e, 32), expected)


@pytest.mark.slow
def test_pipeline_feeds_decoded_pixels_and_augments_only_training(synth: Path):
    """Eval batches are the worker's pixels in order; training batches are augmented."""
    data = read_labelled(synth / "labels_front.csv")
    examples = data.examples[:8]
    kw = dict(
        size=32,
        gender_labels=["MEN", "WOMEN"],
        product_labels=PRODUCTS,
        use_text=True,
        batch_size=4,
    )
    batches = list(make_dataset(examples, **kw))
    images = np.concatenate([b[0]["image"].numpy() for b in batches])
    expected = np.stack([load_image(e, 32) for e in examples]).astype(np.float32)
    np.testing.assert_array_equal(images, expected)
    captions = np.concatenate([b[0]["caption"].numpy() for b in batches])
    assert captions.shape == (8, 1) and captions[0, 0].decode() == examples[0].caption
    products = np.concatenate([b[1]["product"].numpy() for b in batches])
    assert [PRODUCTS[i] for i in products.argmax(1)] == [e.product for e in examples]

    blank = next(iter(make_dataset(examples, blank_captions=True, **kw)))[0]["caption"]
    assert set(blank.numpy().ravel().tolist()) == {b""}

    trained = list(make_dataset(examples, training=True, seed=1, **kw))
    aug = np.concatenate([b[0]["image"].numpy() for b in trained])
    assert aug.shape == images.shape
    order = np.concatenate([b[1]["product"].numpy().argmax(1) for b in trained])
    assert sorted(order.tolist()) == sorted(products.argmax(1).tolist())
    assert not any(np.array_equal(a, x) for a in aug for x in expected)


def _training_batches(examples, *, seed: int, n_batches: int, **kw) -> list[np.ndarray]:
    ds = make_dataset(examples, training=True, repeat=True, seed=seed, caption_dropout=0.5, **kw)
    return [
        (b[0]["image"].numpy(), b[0]["caption"].numpy(), b[1]["product"].numpy())
        for b in ds.take(n_batches)
    ]


@pytest.mark.slow
def test_training_pipeline_repeats_exactly_for_a_seed(synth: Path):
    """Same seed: identical shuffled, augmented, caption-dropped batches; another seed or
    the next pass over the data (repeat) draws anew."""
    data = read_labelled(synth / "labels_front.csv")
    kw = dict(
        size=32, gender_labels=["MEN", "WOMEN"], product_labels=PRODUCTS, use_text=True,
        batch_size=4,
    )  # fmt: skip
    examples = data.examples[:8]  # two batches a pass
    first = _training_batches(examples, seed=5, n_batches=4, **kw)
    again = _training_batches(examples, seed=5, n_batches=4, **kw)
    for a, b in zip(first, again, strict=True):
        for x, y in zip(a, b, strict=True):
            np.testing.assert_array_equal(x, y)
    other = _training_batches(examples, seed=6, n_batches=4, **kw)
    assert not np.array_equal(first[0][0], other[0][0])
    # passes 1 and 2 hold the same 8 items; their augmentation differs
    pass_1 = np.concatenate([first[0][0], first[1][0]])
    pass_2 = np.concatenate([first[2][0], first[3][0]])
    assert not any(np.array_equal(a, b) for a in pass_1 for b in pass_2)
    dropped = np.concatenate([c for _, c, _ in first]).ravel().tolist()
    assert b"" in dropped and any(dropped)  # caption dropout draws blank some, not all
