"""End to end with real processes: `tagger import` queues batches in Redis, two real
`celery worker` processes fetch from S3 (moto server), tag, and write to Postgres."""

from __future__ import annotations

import os

import pytest
import sqlalchemy as sa

from tagger.db import Failure, Job, current_tags
from tests.factories import make_s3_catalogue, write_csv
from tests.processes import start_worker, stop, wait_for_job

pytestmark = pytest.mark.slow


@pytest.fixture
def env(settings_env, tmp_path) -> dict[str, str]:
    """Environment for the child processes: the test's Postgres db, Redis db and S3."""
    return {**os.environ, "TAGGER_LOG_LEVEL": "INFO", "TAGGER_FETCH_CONCURRENCY": "8"}


def test_500_items_two_workers_one_tag_per_good_item(
    db, env, tagger_cli, s3_client, bucket, artifact, tmp_path
):
    """500 items, 5% broken (one in five a PNG failing its CRC), one in seven a GIF, an
    animated GIF or a palette PNG with an oversized tRNS, two worker processes: one current
    tag per good item, one failure per broken item, counters that add up; importing again
    queues only the broken items."""
    rows, broken = make_s3_catalogue(s3_client, bucket, n=500, broken_every=20, odd_every=7)
    assert len(broken) == 25
    catalogue = write_csv(tmp_path / "catalogue.csv", rows)

    reg = tagger_cli(env, "model", "register", artifact, "--activate", "--version", "e2e-v1")
    assert reg.returncode == 0, reg.stderr
    imp = tagger_cli(env, "import", str(catalogue), "--batch-size", "25")
    assert imp.returncode == 0, imp.stderr
    job_id = int(imp.stdout.strip())

    logs = [tmp_path / "w1.log", tmp_path / "w2.log"]
    # One prefork worker, and one with two threads sharing one model (fetch and decode
    # of one batch overlap the other's model call).
    workers = [
        start_worker(env, "w1", logs[0]),
        start_worker(env, "w2", logs[1], "--pool", "threads", "--concurrency", "2"),
    ]
    try:
        job = wait_for_job(db, job_id, workers)
    finally:
        stop(workers)

    assert (job.total, job.done, job.failed) == (500, 475, 25)
    with db.connect() as conn:
        current = conn.execute(
            sa.select(current_tags.c.item_id, current_tags.c.model_version)
        ).all()
        failures = dict(conn.execute(sa.select(Failure.item_id, Failure.reason)).all())
    good = {r["item_id"] for r in rows} - set(broken)
    assert sorted(r.item_id for r in current) == sorted(good)  # exactly one per good item
    assert {r.model_version for r in current} == {"e2e-v1"}
    assert failures == broken
    # Both processes did real work (each logs its batches).
    batches = [log.read_text().count("model call") for log in logs]
    assert all(n > 0 for n in batches) and sum(batches) >= 20, batches

    again = tagger_cli(env, "import", str(catalogue), "--batch-size", "25")
    assert again.returncode == 0, again.stderr
    second = int(again.stdout.strip() or again.stderr.split("job ")[1].split(":")[0])
    with db.connect() as conn:
        job2 = conn.execute(sa.select(Job.__table__).where(Job.id == second)).one()
    # The 25 broken items are not tagged by the active model, so they are offered again.
    assert (job2.total, job2.skipped) == (25, 475)
