"""`tagger labels export`: human labels written as a DeepFashion-MultiModal folder that
`python -m train fit` trains on, whole or not at all, naming every item it leaves out."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tagger.db import Item
from tagger.export import export_labels, labelled_items, storage_fetch
from tagger.labels import set_label
from tagger.scoring import Prediction
from tagger.settings import Settings
from tagger.tags import save_batch
from tests.factories import add_model_version, jpeg_bytes

HEADER = ["image_id", "caption", "path", "gender", "product_type", "product_id", "image_type"]


def _tag(s, item_ids: list[str], gender: str = "MEN", product: str = "Pants") -> None:
    """v1 tags the items ``gender`` / ``product``."""
    scores = {"gender": {gender: 0.9}, "product": {product: 0.8}}
    preds = {i: Prediction(gender, 0.9, product, 0.8, scores, product_margin=0.6) for i in item_ids}
    save_batch(session=s, job_id=None, model_version="v1", predictions=preds, failures={})


def _rows(out: Path) -> list[dict[str, str]]:
    with open(out / "labels_front.csv", newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == HEADER
        return list(reader)


def _siblings(out: Path) -> list[str]:
    """What else lies beside ``out``: a failed or finished run leaves no temporary folder."""
    return sorted(p.name for p in out.parent.iterdir() if p.name != out.name)


@pytest.fixture
def s3_items(session_factory, settings_env, s3_client, bucket):
    """v1 active; items a (labelled WOMEN/Dresses over its MEN/Pants tag), b (labelled
    Dresses only over a MEN/Pants tag), c (tagged, not labelled) and e (labelled
    MEN/Dresses, never tagged), each with a JPEG on the moto server."""
    images = {}
    with session_factory.begin() as s:
        add_model_version(s, "v1", activate=True)
        for n, item_id in enumerate("abce"):
            images[item_id] = jpeg_bytes(seed=n)
            s3_client.put_object(Bucket=bucket, Key=f"img/{item_id}.jpg", Body=images[item_id])
            uri = f"s3://{bucket}/img/{item_id}.jpg"
            s.add(Item(item_id=item_id, image_uri=uri, title=f'item {item_id}, a "dress"'))
        s.flush()
        _tag(s, ["a", "b", "c"])
        set_label(session=s, item_id="a", by="ana", gender="WOMEN", product_type="Dresses")
        set_label(session=s, item_id="b", by="bo", product_type="Dresses")
        set_label(session=s, item_id="e", by="ana", gender="MEN", product_type="Dresses")
    return images


def test_cli_writes_the_deepfashion_layout_with_label_over_tag(s3_items, tmp_path, tagger_cli):
    """The CSV has DeepFashion's columns, the label's values over the tag's, a NULL field
    from the tag, titles as captions; the images are the stored bytes; the trainer reads it."""
    from train.data import DEEPFASHION, read_labelled

    out = tmp_path / "export"
    done = tagger_cli(dict(os.environ), "labels", "export", "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(out / "labels_front.csv")
    assert done.stderr.strip().endswith(f"3 exported to {out}, 0 skipped")
    rows = _rows(out)
    assert [(r["image_id"], r["gender"], r["product_type"]) for r in rows] == [
        ("a", "WOMEN", "Dresses"),
        ("b", "MEN", "Dresses"),
        ("e", "MEN", "Dresses"),
    ]
    assert [(r["path"], r["product_id"], r["image_type"]) for r in rows] == [
        ("a.jpg", "a", "front"),
        ("b.jpg", "b", "front"),
        ("e.jpg", "e", "front"),
    ]
    assert rows[0]["caption"] == 'item a, a "dress"'
    assert sorted(p.name for p in (out / "selected_images").iterdir()) == [
        "a.jpg",
        "b.jpg",
        "e.jpg",
    ]
    for item_id in "abe":
        assert (out / "selected_images" / f"{item_id}.jpg").read_bytes() == s3_items[item_id]
    data = read_labelled(out / "labels_front.csv")
    assert data.layout == DEEPFASHION
    assert [(e.ref, e.caption, e.gender, e.product) for e in data.examples][1] == (
        "b", 'item b, a "dress"', "MEN", "Dresses"
    )  # fmt: skip
    assert _siblings(out) == []


def test_cli_names_and_skips_bad_items_and_writes_the_rest(
    s3_items, session_factory, s3_client, bucket, tmp_path, tagger_cli
):
    """A missing image, a file that is not an image and a label with a NULL field on an
    untagged item are each named with their reason and left out; the rest are written
    and the exit code says the export is incomplete."""
    s3_client.delete_object(Bucket=bucket, Key="img/b.jpg")
    s3_client.put_object(Bucket=bucket, Key="img/e.jpg", Body=b"<html>not found</html>")
    with session_factory.begin() as s:
        s.add(Item(item_id="d", image_uri=f"s3://{bucket}/img/a.jpg", title=None))
        s.flush()
        set_label(session=s, item_id="d", by="ana", product_type="Pants")
    out = tmp_path / "export"
    done = tagger_cli(dict(os.environ), "labels", "export", "--out", str(out))
    assert done.returncode == 3, done.stderr
    lines = done.stderr.strip().splitlines()
    assert lines[-1] == (
        f"1 exported to {out}, 3 skipped (no_tag 1, missing_image 1, not_an_image 1)"
    )
    skipped = "\n".join(lines[:-1])
    assert f"skipped b: missing_image: no such object: s3://{bucket}/img/b.jpg" in skipped
    assert "skipped e: not_an_image: " in skipped
    assert "skipped d: no_tag: the label has no gender and the item has no model tag" in skipped
    assert [r["image_id"] for r in _rows(out)] == ["a"]
    assert [p.name for p in (out / "selected_images").iterdir()] == ["a.jpg"]
    assert _siblings(out) == []


def test_a_non_empty_out_is_refused_unless_forced_and_a_failed_run_leaves_it(
    s3_items, s3_client, bucket, tmp_path, tagger_cli
):
    """A non-empty DIR is refused as it is; --force replaces it whole; a run that can
    export nothing leaves the old DIR untouched and exits 1."""
    out = tmp_path / "export"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    env = dict(os.environ)
    refused = tagger_cli(env, "labels", "export", "--out", str(out))
    assert refused.returncode == 1
    assert f"error: {out} is not empty; give --force to replace it" in refused.stderr
    assert [p.name for p in out.iterdir()] == ["keep.txt"]

    forced = tagger_cli(env, "labels", "export", "--out", str(out), "--force")
    assert forced.returncode == 0, forced.stderr
    assert sorted(p.name for p in out.iterdir()) == ["labels_front.csv", "selected_images"]
    assert _siblings(out) == []

    for item_id in "abce":
        s3_client.delete_object(Bucket=bucket, Key=f"img/{item_id}.jpg")
    before = (out / "labels_front.csv").read_text()
    failed = tagger_cli(env, "labels", "export", "--out", str(out), "--force")
    assert failed.returncode == 1
    assert failed.stderr.strip().endswith(
        f"0 exported, 3 skipped (missing_image 3): nothing written to {out}"
    )
    assert (out / "labels_front.csv").read_text() == before
    assert _siblings(out) == []


def test_local_and_file_uris_on_postgres_and_sqlite(sessions, tmp_path):
    """In embedded mode (local paths, file:// URIs, SQLite) the same values come out,
    --since and --by select labels, and an unsafe item id gets a safe file name."""
    from datetime import timedelta

    from tagger.db import utcnow

    folder = tmp_path / "photos"
    folder.mkdir()
    uris = {}
    for n, item_id in enumerate(["x/1", "y", "Y"]):
        path = folder / f"{n}.jpg"
        path.write_bytes(jpeg_bytes(seed=n))
        uris[item_id] = path.as_uri() if n % 2 else str(path)
    with sessions.begin() as s:
        add_model_version(s, "v1", activate=True)
        s.add_all([Item(item_id=i, image_uri=u, title="t") for i, u in uris.items()])
        s.flush()
        _tag(s, list(uris), gender="WOMEN")
        set_label(session=s, item_id="x/1", by="ana", product_type="Dresses")
        set_label(session=s, item_id="y", by="bo", gender="MEN")
        set_label(session=s, item_id="Y", by="bo", product_type="Dresses")
    with sessions() as s:
        everything = labelled_items(session=s)
        by_bo = labelled_items(session=s, by="bo")
        later = labelled_items(session=s, since=utcnow() + timedelta(hours=1))
    assert [(i.item_id, i.gender, i.product_type) for i in everything] == [
        ("Y", "WOMEN", "Dresses"),
        ("x/1", "WOMEN", "Dresses"),
        ("y", "MEN", "Pants"),
    ]
    assert [i.item_id for i in by_bo] == ["Y", "y"] and later == []
    out = tmp_path / "export"
    result = export_labels(
        items=everything, fetch=storage_fetch(Settings()), out=out, max_pixels=10**6
    )
    assert (result.exported, result.skipped) == (3, [])
    names = {r["image_id"]: r["path"] for r in _rows(out)}
    assert names["Y"] == "Y.jpg" and names["y"].startswith("y-") and names["y"].endswith(".jpg")
    assert names["x/1"].startswith("x_1-")
    assert (out / "selected_images" / names["x/1"]).read_bytes() == jpeg_bytes(seed=0)


@pytest.mark.slow
def test_train_fit_trains_on_an_export(session_factory, settings_env, tmp_path, tagger_cli):
    """A synthetic labelled set (half the labels give only the product type, the gender
    coming from the tag) exported by the CLI trains with `python -m train fit` as it
    is, into an artifact the worker's loader loads with the exported label lists."""
    import numpy as np

    from tagger.images import decode_image
    from tagger.model import load_model
    from train.synthetic import generate

    synth = generate(tmp_path / "synth", n=16, seed=5, image_size=32, products=["Dresses", "Pants"])
    with open(synth / "labels_front.csv", newline="") as f:
        drawn = list(csv.DictReader(f))
    with session_factory.begin() as s:
        add_model_version(s, "v1", activate=True)
        for r in drawn:
            path = synth / "selected_images" / r["path"]
            s.add(Item(item_id=r["image_id"], image_uri=str(path), title=r["caption"]))
        s.flush()
        for n, r in enumerate(drawn):
            # the model got the gender right and the product wrong; people fixed the product
            wrong = "Pants" if r["product_type"] == "Dresses" else "Dresses"
            _tag(s, [r["image_id"]], gender=r["gender"], product=wrong)
            gender = r["gender"] if n % 2 else None
            set_label(
                session=s, item_id=r["image_id"], by="ana", gender=gender,
                product_type=r["product_type"],
            )  # fmt: skip
    out = tmp_path / "export"
    done = tagger_cli(dict(os.environ), "labels", "export", "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert {(r["image_id"], r["gender"], r["product_type"]) for r in _rows(out)} == {
        (r["image_id"], r["gender"], r["product_type"]) for r in drawn
    }
    artifact = tmp_path / "model"
    fit = subprocess.run(
        [
            sys.executable, "-m", "train", "fit", "--data", done.stdout.strip(),
            "--out", str(artifact), "--image-size", "32", "--epochs", "1", "--batch-size", "8",
            "--backbone-weights", "none", "--val-split", "0.25", "--bn-calibration-items", "0",
        ],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert fit.returncode == 0, fit.stdout + fit.stderr
    assert "saved artifact" in fit.stdout
    model = load_model(artifact, version="exported")
    assert model.gender_labels == ["MEN", "WOMEN"]
    assert model.product_labels == ["Dresses", "Pants"]
    image = decode_image(
        (out / "selected_images" / _rows(out)[0]["path"]).read_bytes(), size=32, max_pixels=10**6
    )
    [prediction] = model.predict(np.stack([image]), ["a dress"])
    assert prediction.product_type in ("Dresses", "Pants")
