"""The synthetic catalogue generator: deterministic, DeepFashion-MultiModal layout."""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image

from train.cli import cli
from train.model import GENDER_LABELS, PRODUCT_LABELS
from train.synthetic import generate

LABEL_COLUMNS = [
    "image_id",
    "caption",
    "path",
    "gender",
    "product_type",
    "product_id",
    "image_type",
]


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return generate(tmp_path_factory.mktemp("syn") / "a", n=68, seed=5, image_size=32)


def test_layout_and_columns_match_deepfashion(dataset: Path):
    """labels_front.csv has exactly the DeepFashion columns and every path is a JPEG."""
    with open(dataset / "labels_front.csv", newline="") as f:
        assert next(csv.reader(f)) == LABEL_COLUMNS
    rows = _rows(dataset / "labels_front.csv")
    assert len(rows) == 68
    for r in rows:
        assert r["image_type"] == "front"
        assert r["path"] == f"{r['gender']}-{r['product_type']}-{r['product_id']}-01_1_front.jpg"
        assert r["image_id"] == r["path"].removesuffix(".jpg")
        with Image.open(dataset / "selected_images" / r["path"]) as im:
            assert (im.format, im.mode, im.size) == ("JPEG", "RGB", (32, 32))
    assert len({r["image_id"] for r in rows}) == len(rows)


def test_same_seed_gives_identical_bytes(dataset: Path, tmp_path: Path):
    """Regenerating with the same seed reproduces the CSV and every image byte for byte."""
    again = generate(tmp_path / "b", n=68, seed=5, image_size=32)
    labels = (dataset / "labels_front.csv").read_bytes()
    assert (again / "labels_front.csv").read_bytes() == labels
    for r in _rows(dataset / "labels_front.csv"):
        original = (dataset / "selected_images" / r["path"]).read_bytes()
        assert (again / "selected_images" / r["path"]).read_bytes() == original
    # The catalogue differs only by where it was written (absolute image paths).
    a = (dataset / "catalogue.csv").read_text().replace(str(dataset.resolve()), "ROOT")
    b = (again / "catalogue.csv").read_text().replace(str(again.resolve()), "ROOT")
    assert a == b


def test_other_seed_gives_other_catalogue(dataset: Path, tmp_path: Path):
    """A different seed gives different labels order and images."""
    other = generate(tmp_path / "c", n=68, seed=6, image_size=32)
    assert (other / "labels_front.csv").read_bytes() != (dataset / "labels_front.csv").read_bytes()


def test_every_label_pair_present_and_balanced(dataset: Path):
    """Every (gender, product type) pair appears equally often: twice in 68 items."""
    rows = _rows(dataset / "labels_front.csv")
    pairs = Counter((r["gender"], r["product_type"]) for r in rows)
    assert set(pairs) == {(g, p) for g in GENDER_LABELS for p in PRODUCT_LABELS}
    assert set(pairs.values()) == {2}


def test_every_product_type_present_for_34_items(tmp_path: Path):
    """34 items are enough for all 17 product types and both genders."""
    rows = _rows(generate(tmp_path, n=34, seed=11, image_size=32) / "labels_front.csv")
    assert {r["product_type"] for r in rows} == set(PRODUCT_LABELS)
    assert {r["gender"] for r in rows} == set(GENDER_LABELS)


def test_captions_describe_garment_and_sometimes_wearer(dataset: Path):
    """Every item has an English caption; some name the wearer as DeepFashion's do."""
    rows = _rows(dataset / "labels_front.csv")
    assert all(r["caption"].strip().endswith(".") for r in rows)
    wearer = {"WOMEN": ("lady", "woman", "female"), "MEN": ("gentleman", "man", "guy")}
    named = [r for r in rows if r["caption"].split()[1] in wearer[r["gender"]]]
    assert 0 < len(named) < len(rows)


def test_catalogue_is_importable(dataset: Path):
    """catalogue.csv has item_id,image_uri,title with absolute paths to the images."""
    with open(dataset / "catalogue.csv", newline="") as f:
        assert next(csv.reader(f)) == ["item_id", "image_uri", "title"]
    catalogue = _rows(dataset / "catalogue.csv")
    labels = {r["image_id"]: r for r in _rows(dataset / "labels_front.csv")}
    assert [c["item_id"] for c in catalogue] == list(labels)
    for c in catalogue:
        assert Path(c["image_uri"]).is_absolute() and Path(c["image_uri"]).is_file()
        assert c["title"] == labels[c["item_id"]]["caption"]


def test_negative_n_is_refused(tmp_path: Path):
    """A negative item count is an error, not an empty catalogue."""
    with pytest.raises(ValueError, match="n must be"):
        generate(tmp_path, n=-1)


def test_cli_synthetic_writes_catalogue(tmp_path: Path):
    """`python -m train synthetic` writes the files and prints a one-line summary."""
    result = CliRunner().invoke(
        cli, ["synthetic", "--out", str(tmp_path / "s"), "--n", "3", "--image-size", "32"]
    )
    assert result.exit_code == 0, result.output
    assert len(result.output.strip().splitlines()) == 1
    assert len(_rows(tmp_path / "s" / "labels_front.csv")) == 3


def test_products_subset_draws_only_those(tmp_path: Path):
    """generate(products=...) draws only the given product types, still balanced."""
    rows = _rows(
        generate(tmp_path, n=12, seed=1, image_size=32, products=["Pants", "Skirts"])
        / "labels_front.csv"
    )
    pairs = Counter((r["gender"], r["product_type"]) for r in rows)
    assert set(pairs) == {(g, p) for g in GENDER_LABELS for p in ("Pants", "Skirts")}
    assert set(pairs.values()) == {3}
    with pytest.raises(ValueError, match="unknown product types"):
        generate(tmp_path / "x", n=1, products=["Hats"])


def test_upload_to_s3_gives_an_importable_catalogue(dataset: Path, s3_client, bucket: str):
    """upload() copies labels, images and an s3:// catalogue under the prefix."""
    from train.synthetic import upload

    count = upload(dataset, f"s3://{bucket}/syn/", s3_client)
    keys = {o["Key"] for o in s3_client.list_objects_v2(Bucket=bucket, Prefix="syn/")["Contents"]}
    assert count == len(keys) == 68 + 2
    assert {"syn/labels_front.csv", "syn/catalogue.csv"} <= keys
    body = s3_client.get_object(Bucket=bucket, Key="syn/catalogue.csv")["Body"].read().decode()
    catalogue = list(csv.DictReader(body.splitlines()))
    first = catalogue[0]["image_uri"]
    assert first.startswith(f"s3://{bucket}/syn/selected_images/") and first.endswith(".jpg")
    assert f"syn/selected_images/{first.rsplit('/', 1)[1]}" in keys
