"""`tagger model compare` end to end: two real small models over a synthetic catalogue
(the real architecture with a random frozen backbone, whose heads are fitted in closed
form on another synthetic set: one reads captions, the other images only), the
candidate's shadow job tagged by a real `tagger worker` that keeps both models loaded,
the report printed and its heat map written. With TAGGER_SCREENSHOTS=<dir> the heat map
is copied there as compare-heatmap.png."""

from __future__ import annotations

import csv
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
from PIL import Image

from tagger.compare import worse_on_labels
from tagger.db import Failure, Job, ModelComparison, Tag, current_tags
from tagger.png import SIGNATURE, png_damage
from tests.factories import GENDERS, PRODUCTS
from tests.processes import start_worker, stop, wait_for_job

pytestmark = pytest.mark.slow


def _synthetic(out: Path, *, n: int, seed: int) -> list[dict[str, str]]:
    """A synthetic catalogue of the test models' four product types; its labels."""
    from train.synthetic import generate

    generate(out, n=n, seed=seed, image_size=48, products=PRODUCTS)
    return list(csv.DictReader((out / "labels_front.csv").open()))


def probe_artifact(out: Path, train: Path, *, use_text: bool, seed: int) -> Path:
    """A model of the real architecture (32 px, random frozen backbone) whose two heads
    are a ridge regression on its own fused features of the ``train`` catalogue (one-hot
    targets as logits of +-4): a small model that has learnt something, in a second or
    two instead of a fit's minutes. Saved as an artifact."""
    import keras
    import tensorflow as tf

    from tagger.artifacts import save_artifact
    from train.model import ModelConfig, build_model

    rows = list(csv.DictReader((train / "labels_front.csv").open()))
    keras.utils.set_random_seed(seed)
    config = ModelConfig(image_size=32, use_text=use_text, backbone_weights=None)
    captions = [r["caption"] for r in rows]
    model = build_model(config, gender_labels=GENDERS, product_labels=PRODUCTS, captions=captions)
    images = [Image.open(train / "selected_images" / r["path"]).convert("RGB") for r in rows]
    pixels = np.stack([np.asarray(i.resize((32, 32)), np.float32) for i in images])
    inputs = {"image": tf.constant(pixels)}
    if use_text:
        inputs["caption"] = tf.constant([[c] for c in captions])
    fused = keras.Model(model.inputs, model.get_layer("fusion_dropout").output)
    features = fused(inputs, training=False).numpy().astype(np.float64)
    mean, std = features.mean(0), features.std(0) + 1e-6
    x = (features - mean) / std
    for head, labels, field in (
        ("gender", GENDERS, "gender"),
        ("product", PRODUCTS, "product_type"),
    ):
        y = np.eye(len(labels))[[labels.index(r[field]) for r in rows]] * 8 - 4
        w = np.linalg.solve(x.T @ x + np.eye(x.shape[1]), x.T @ (y - y.mean(0))) / std[:, None]
        b = y.mean(0) - mean @ w
        model.get_layer(head).set_weights([w.astype(np.float32), b.astype(np.float32)])
    return save_artifact(model, out, config=config, gender_labels=GENDERS, product_labels=PRODUCTS)


def test_compare_through_a_worker_reports_and_draws_without_changing_current_tags(
    db, settings_env, tagger_cli, tmp_path
):
    """v1 (active) tags the catalogue; 9 items get human labels (one of them a broken
    item); `model compare v2 --sample 20` queues a shadow job the running worker tags
    with v2, prints agreement per head and both versions' accuracy on the labelled items,
    stores the report and writes a valid heat map. Current tags stay v1's, the broken
    item's failure row is untouched, a later import is tagged with the v1 model the
    worker kept loaded (two loads in all), and `model activate v2` follows the report."""
    env = {**os.environ, "TAGGER_LOG_LEVEL": "INFO", "TAGGER_BATCH_SIZE": "8"}
    _synthetic(tmp_path / "train", n=48, seed=7)
    truth = _synthetic(tmp_path / "catalogue", n=40, seed=8)
    images = tmp_path / "catalogue" / "selected_images"
    catalogue = tmp_path / "catalogue" / "catalogue.csv"
    with catalogue.open("a") as fh:
        fh.write(f"missing-1,{tmp_path / 'no-such-image.jpg'},a dress\n")
    v1 = probe_artifact(tmp_path / "v1", tmp_path / "train", use_text=True, seed=1)
    v2 = probe_artifact(tmp_path / "v2", tmp_path / "train", use_text=False, seed=2)
    for args in ((v1, "v1", "--activate"), (v2, "v2")):
        reg = tagger_cli(env, "model", "register", str(args[0]), "--version", *args[1:])
        assert reg.returncode == 0, reg.stderr
    imp = tagger_cli(env, "import", str(catalogue))
    assert imp.returncode == 0, imp.stderr

    log = tmp_path / "worker.log"
    worker = start_worker(env, "cmp", log)
    try:
        wait_for_job(db, int(imp.stdout), [worker], timeout=180)
        for row in truth[:8]:
            label = tagger_cli(
                env, "labels", "set", row["image_id"], "--gender", row["gender"],
                "--product-type", row["product_type"], "--by", "test",
            )  # fmt: skip
            assert label.returncode == 0, label.stderr
        label = tagger_cli(env, "labels", "set", "missing-1", "--gender", "WOMEN", "--by", "t")
        assert label.returncode == 0, label.stderr
        with db.connect() as conn:
            failure_before = conn.execute(sa.select(Failure.__table__)).one()
        out = tmp_path / "report"
        done = tagger_cli(
            env, "model", "compare", "v2", "--sample", "20", "--out", str(out),
            "--interval", "0.2",
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        more = tmp_path / "more.csv"
        lines = "".join(f"more-{k},{images / truth[k]['path']}\n" for k in range(4))
        more.write_text("item_id,image_uri\n" + lines)
        again = tagger_cli(env, "import", str(more))
        assert again.returncode == 0, again.stderr
        wait_for_job(db, int(again.stdout), [worker], timeout=120)
    finally:
        stop([worker])
    activate = tagger_cli(env, "model", "activate", "v2")

    print(done.stdout)
    print(done.stderr)
    print(activate.stderr)
    headline = [line for line in done.stderr.splitlines() if line.startswith("comparison 1:")]
    assert len(headline) == 1 and "v2 against v1 on " in headline[0]
    assert "agreement gender " in headline[0] and "on 8 labelled items" in headline[0]
    assert "agreement" in done.stdout and "product type" in done.stdout

    png = out / "compare-v2-vs-v1.png"
    data = png.read_bytes()
    assert data.startswith(SIGNATURE) and png_damage(data) is None
    with Image.open(png) as image:
        assert image.format == "PNG" and 300 <= image.width <= 2000
        assert 150 <= image.height <= 1500 and 2_000 < len(data) < 500_000
    if os.environ.get("TAGGER_SCREENSHOTS"):
        shots = Path(os.environ["TAGGER_SCREENSHOTS"])
        shots.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(png, shots / "compare-heatmap.png")

    with db.connect() as conn:
        shadow = conn.execute(sa.select(Job.__table__).where(Job.kind == "shadow")).one()
        # 20 sampled, and the labelled items outside the sample (at most 9); every one
        # tagged by v2 but the broken one
        assert 21 <= shadow.total <= 29 and (shadow.status, shadow.failed) == ("finished", 1)
        assert shadow.done == shadow.total - 1 and shadow.model_version == "v2"
        v2_tags = conn.scalar(sa.select(sa.func.count()).where(Tag.model_version == "v2"))
        assert v2_tags == shadow.done
        shown = conn.execute(
            sa.select(current_tags.c.model_version, sa.func.count()).group_by(
                current_tags.c.model_version
            )
        ).all()
        assert shown == [("v1", 44)]  # 40, and the 4 imported later: all v1's
        assert conn.execute(sa.select(Failure.__table__)).one() == failure_before
        report = conn.scalar(sa.select(ModelComparison.report))
    # one load of each model: the later import ran on the v1 model the worker kept
    assert log.read_text().count("loaded model") == 2
    # `model activate v2` goes by the report: refused exactly when v2 is worse on labels
    assert activate.stderr.startswith("comparison 1 (")
    assert (activate.returncode == 1) == bool(worse_on_labels(report))
