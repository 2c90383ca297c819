"""The OpenVINO runtime with real processes: a worker tags a caption model's job on
OpenVINO, then a newly activated image-only version is converted and loaded between
batches without a restart, and the process that ran both never loaded TensorFlow."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import sqlalchemy as sa

from tagger.db import current_tags
from tagger.runtime import choose_precision, cpu_flags
from tagger.settings import available_cores
from tests.factories import build_artifact, make_s3_catalogue, write_csv
from tests.processes import start_worker, stop, wait_for_job

pytestmark = pytest.mark.slow


def _pool_processes(pid: int) -> list[int]:
    children = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(c) for c in children.read_text().split()] if children.exists() else []


def _loaded_tensorflow(pid: int) -> bool:
    """Whether the process has TensorFlow's shared library mapped (imported at any time)."""
    return "_pywrap_tensorflow" in Path(f"/proc/{pid}/maps").read_text()


def test_roll_out_on_openvino_converts_between_batches_without_tensorflow(
    db, settings_env, tagger_cli, s3_client, bucket, artifact, tmp_path
):
    """v1 (image+text) tags a job on OpenVINO; v2 (image-only, registered on a Keras host,
    so not yet converted) is activated; the running worker converts and loads it before
    its next batch and re-tags everything under v2; one current tag per good item, one
    failure per broken one, and no TensorFlow in either of the worker's two (default)
    pool processes."""
    env = {**os.environ, "TAGGER_LOG_LEVEL": "INFO", "TAGGER_RUNTIME": "openvino"}
    rows, broken = make_s3_catalogue(s3_client, bucket, n=30, broken_every=10)
    catalogue = write_csv(tmp_path / "catalogue.csv", rows)
    image_only = build_artifact(tmp_path / "image-only", image_size=32, use_text=False)

    reg = tagger_cli(env, "model", "register", artifact, "--version", "v1", "--activate")
    assert reg.returncode == 0, reg.stderr
    # Registered where workers run Keras: nothing converted until a worker needs it.
    keras_env = {**env, "TAGGER_RUNTIME": "keras"}
    reg = tagger_cli(keras_env, "model", "register", str(image_only), "--version", "v2")
    assert reg.returncode == 0, reg.stderr
    converted = Path(os.environ["TAGGER_MODEL_CACHE_DIR"]) / "openvino"
    assert len(list(converted.iterdir())) == 1  # v1's, from its registration

    imp = tagger_cli(env, "import", str(catalogue), "--batch-size", "10")
    assert imp.returncode == 0, imp.stderr
    log = tmp_path / "worker.log"
    worker = start_worker(env, "ov", log)
    try:
        wait_for_job(db, int(imp.stdout), [worker])
        # v2 was never compared with v1 (`tagger model compare`): activated on purpose
        assert tagger_cli(env, "model", "activate", "v2", "--force").returncode == 0
        retag = tagger_cli({**env, "TAGGER_BATCH_SIZE": "10"}, "retag", "--all")
        assert retag.returncode == 0, retag.stderr
        job = wait_for_job(db, int(retag.stdout.split()[-1]), [worker])
        pool = _pool_processes(worker.pid)
        assert len(pool) == 2  # the default on OpenVINO: two pool processes
        assert not any(_loaded_tensorflow(pid) for pid in pool)
    finally:
        stop([worker])

    good = {r["item_id"] for r in rows} - set(broken)
    assert (job.total, job.done, job.failed) == (len(rows), len(good), len(broken))
    with db.connect() as conn:
        current = conn.execute(sa.select(current_tags.c.item_id, current_tags.c.model_version))
        assert sorted(current) == sorted((item, "v2") for item in good)
    text = log.read_text()
    assert "loaded model v1 on openvino" in text and "loaded model v2 on openvino" in text
    # Each of the two processes may use every core, unpinned (they take turns).
    cores = available_cores()
    precision = choose_precision("auto", flags=cpu_flags())
    assert f"{precision}, {cores} thread{'s' if cores != 1 else ''}," in text
    assert len(list(converted.iterdir())) == 2  # the worker converted v2 itself
