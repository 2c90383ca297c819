"""Roll-out and the nightly sweep with real processes: a running worker switches to a newly
activated model without a restart, and the beat schedule's entry, sent through Celery,
re-tags the catalogue under the new version."""

from __future__ import annotations

import json
import os

import pytest
import sqlalchemy as sa
from celery.beat import Scheduler

from tagger.celery_app import NIGHTLY_RETAG, create_app
from tagger.db import Job, Tag, current_tags
from tests.factories import make_s3_catalogue, write_csv
from tests.processes import start_worker, stop, wait_for_job

pytestmark = pytest.mark.slow


def _wait_for_retag_job(engine, workers, timeout=120):
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with engine.connect() as conn:
            job_id = conn.scalar(sa.select(Job.id).where(Job.kind == "retag"))
        if job_id is not None:
            return wait_for_job(engine, job_id, workers)
        time.sleep(0.5)
    raise AssertionError("the scheduled sweep queued no retag job")


def test_activated_model_is_used_by_running_worker_and_nightly_sweep(
    db, settings_env, tagger_cli, s3_client, bucket, artifact, tmp_path
):
    """v1 tags an import; v2 is activated while the worker runs; the beat entry re-tags every
    good item with v2; `model list` counts both; `tags prune --keep 1` drops the v1 rows."""
    env = {**os.environ, "TAGGER_LOG_LEVEL": "INFO"}
    rows, broken = make_s3_catalogue(s3_client, bucket, n=40, broken_every=20)
    catalogue = write_csv(tmp_path / "catalogue.csv", rows)
    for version in ("v1", "v2"):
        reg = tagger_cli(env, "model", "register", artifact, "--version", version)
        assert reg.returncode == 0, reg.stderr
    assert tagger_cli(env, "model", "activate", "v1").returncode == 0
    imp = tagger_cli(env, "import", str(catalogue), "--batch-size", "10")
    assert imp.returncode == 0, imp.stderr

    log = tmp_path / "worker.log"
    worker = start_worker(env, "w1", log)
    try:
        wait_for_job(db, int(imp.stdout), [worker])
        # v2 was never compared with v1 (`tagger model compare`): activated on purpose
        assert tagger_cli(env, "model", "activate", "v2", "--force").returncode == 0
        # Fire the nightly entry exactly as celery beat does, through Celery's scheduler.
        app = create_app(settings_env)
        scheduler = Scheduler(app, lazy=True)
        scheduler.setup_schedule()
        scheduler.apply_entry(scheduler.schedule[NIGHTLY_RETAG])
        retag = _wait_for_retag_job(db, [worker])
    finally:
        stop([worker])

    good = len(rows) - len(broken)
    assert worker.returncode is not None and log.read_text().count("loaded model") == 2
    assert (retag.total, retag.done, retag.source) == (good, good, "beat")
    with db.connect() as conn:
        current = conn.execute(
            sa.select(current_tags.c.model_version, sa.func.count()).group_by(
                current_tags.c.model_version
            )
        ).all()
    assert current == [("v2", good)]

    listed = tagger_cli(env, "model", "list", "--format", "json")
    counts = {v["version"]: v["tagged_items"] for v in json.loads(listed.stdout)}
    assert counts == {"v1": good, "v2": good}

    pruned = tagger_cli(env, "tags", "prune", "--keep", "1")
    assert pruned.returncode == 0 and f"pruned {good} tag rows" in pruned.stderr
    with db.connect() as conn:
        versions = conn.execute(sa.select(Tag.model_version).distinct()).scalars().all()
    assert versions == ["v2"]
