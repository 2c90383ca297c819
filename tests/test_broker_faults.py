"""The worker's link to Redis failing under it, with a real `tagger worker` behind a TCP
proxy: a black-holed connection (no reset, packets silently dropped) is noticed and
replaced within a minute, and a reset one at once; the next job is tagged in full."""

from __future__ import annotations

import os
import time

import pytest
import sqlalchemy as sa

from tagger.db import Job, current_tags
from tests.factories import make_s3_catalogue, write_csv
from tests.processes import start_worker, stop, tagger, wait_for_job
from tests.services import REDIS_HOST, REDIS_PORT
from tests.tcpproxy import TcpProxy

pytestmark = pytest.mark.slow


@pytest.fixture
def proxy():
    p = TcpProxy((REDIS_HOST, REDIS_PORT))
    yield p
    p.close()


def _import(env, rows, tmp_path, name) -> int:
    imp = tagger(env, "import", str(write_csv(tmp_path / f"{name}.csv", rows)), "--batch-size", "4")
    assert imp.returncode == 0, imp.stderr
    return int(imp.stdout)


@pytest.mark.parametrize("fault", ["blackhole", "reset"])
def test_worker_recovers_from_a_dead_redis_link(
    fault, db, settings_env, redis_db, s3_client, bucket, artifact, tmp_path, proxy
):
    """After the worker's Redis connections are black-holed (or reset), it takes up a batch
    queued afterwards within 60 s; the job ends with one tag per item and counters that
    add up (a batch Redis popped onto the dying link is queued again from the ledger)."""
    env = {**os.environ, "TAGGER_LOG_LEVEL": "INFO"}
    through_proxy = {**env, "TAGGER_BROKER_URL": f"redis://127.0.0.1:{proxy.port}/{redis_db}"}
    rows, _ = make_s3_catalogue(s3_client, bucket, n=12)
    assert tagger(env, "model", "register", artifact, "--activate").returncode == 0
    worker = start_worker(through_proxy, "w1", tmp_path / "worker.log")
    try:
        first = _import(env, rows[:4], tmp_path, "first")
        wait_for_job(db, first, [worker], timeout=180)  # the worker is up, model loaded
        time.sleep(2)  # let it go back to waiting on BRPOP
        assert getattr(proxy, fault)() > 0
        broken_at = time.monotonic()
        second = _import(env, rows[4:], tmp_path, "second")  # published straight to Redis
        recovered_after = _first_batch_done(db, second, [worker], broken_at, timeout=90)
        job = _finish(env, db, second, [worker])
    finally:
        stop([worker])

    assert (job.total, job.done, job.failed) == (8, 8, 0)
    with db.connect() as conn:
        tagged = conn.execute(sa.select(current_tags.c.item_id)).scalars().all()
    assert sorted(tagged) == sorted(r["item_id"] for r in rows)
    assert proxy.connections >= 2  # it reconnected through the proxy
    print(f"{fault}: a batch queued after the link broke was tagged {recovered_after:.1f} s later")
    assert recovered_after < 60, recovered_after


def _first_batch_done(db, job_id, workers, since, timeout) -> float:
    """Seconds from ``since`` until the job has a batch done."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert all(w.poll() is None for w in workers), "a worker exited early"
        with db.connect() as conn:
            done = conn.scalar(sa.select(Job.done).where(Job.id == job_id))
        if done:
            return time.monotonic() - since
        time.sleep(0.2)
    raise AssertionError(f"no batch of job {job_id} was tagged within {timeout} s")


def _finish(env, db, job_id, workers):
    """Wait for the job; if Redis lost a batch it had popped onto the dead link (BRPOP
    removes a message before the worker has it), queue its pending items again, as the
    operator (`tagger jobs resume`) or the sweep would."""
    try:
        return wait_for_job(db, job_id, workers, timeout=30)
    except AssertionError:
        resumed = tagger(env, "jobs", "resume", str(job_id))
        assert resumed.returncode == 0, resumed.stderr
        return wait_for_job(db, job_id, workers, timeout=60)
