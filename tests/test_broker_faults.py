"""The worker's link to Redis failing under it, with a real `tagger worker` behind a TCP
proxy: a black-holed connection (no reset, packets silently dropped) is noticed and
replaced within a minute, and a reset one at once; the next job is tagged in full."""

from __future__ import annotations

import os
import time

import pytest
import sqlalchemy as sa
from kombu.transport.redis import PRIORITY_STEPS, Channel

from tagger.db import Job, current_tags
from tests.factories import make_s3_catalogue, write_csv
from tests.processes import start_worker, stop, wait_for_job
from tests.services import REDIS_HOST, REDIS_PORT, redis_client
from tests.tcpproxy import TcpProxy

pytestmark = pytest.mark.slow

FINISH_TIMEOUT = 30  # seconds before a stuck job is resumed however things look
QUIET_BEFORE_RESUME = 3  # seconds of an idle queue and still counters before then


@pytest.fixture
def proxy():
    p = TcpProxy((REDIS_HOST, REDIS_PORT))
    yield p
    p.close()


def _import(tagger_cli, env, rows, tmp_path, name) -> int:
    csv_path = write_csv(tmp_path / f"{name}.csv", rows)
    imp = tagger_cli(env, "import", str(csv_path), "--batch-size", "4")
    assert imp.returncode == 0, imp.stderr
    return int(imp.stdout)


@pytest.mark.parametrize("fault", ["blackhole", "reset"])
def test_worker_recovers_from_a_dead_redis_link(
    fault, db, settings_env, tagger_cli, redis_db, s3_client, bucket, artifact, tmp_path, proxy
):
    """After the worker's Redis connections are black-holed (or reset), it takes up a batch
    queued afterwards within 60 s; the job ends with one tag per item and counters that
    add up (a batch Redis popped onto the dying link is queued again from the ledger)."""
    env = {**os.environ, "TAGGER_LOG_LEVEL": "INFO"}
    through_proxy = {**env, "TAGGER_BROKER_URL": f"redis://127.0.0.1:{proxy.port}/{redis_db}"}
    rows, _ = make_s3_catalogue(s3_client, bucket, n=12)
    assert tagger_cli(env, "model", "register", artifact, "--activate").returncode == 0
    worker = start_worker(through_proxy, "w1", tmp_path / "worker.log")
    redis = redis_client(redis_db)
    try:
        first = _import(tagger_cli, env, rows[:4], tmp_path, "first")
        wait_for_job(db, first, [worker], timeout=180)  # the worker is up, model loaded
        time.sleep(2)  # let it go back to waiting on BRPOP
        assert getattr(proxy, fault)() > 0
        broken_at = time.monotonic()
        # Published straight to Redis, not through the proxy.
        second = _import(tagger_cli, env, rows[4:], tmp_path, "second")
        recovered_after = _first_batch_done(db, second, [worker], broken_at, timeout=90)
        job = _finish(tagger_cli, env, db, redis, settings_env.queue, second, [worker])
    finally:
        stop([worker])
        redis.close()

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


def _finish(tagger_cli, env, db, redis, queue, job_id, workers):
    """Wait for the job; if Redis lost a batch it had popped onto the dead link (BRPOP
    removes a message before the worker has it), queue its pending items again, as the
    operator (`tagger jobs resume`) or the sweep would."""
    # A batch popped onto the black-holed link is gone from Redis for good: it is not in
    # the queue, and kombu's unacked registry never got it (the worker writes that record
    # only once it has read the message). So as soon as the job is unfinished while the
    # queue and the unacked registry are both empty and its counters have stood still for
    # a few seconds, nothing anywhere will finish it: resume it then, not after a fixed
    # wait. A batch still in flight is either queued or in the unacked registry (from the
    # worker's read until its ack), and the quiet period covers the instant between the
    # BRPOP and the record. The upper bound resumes anyway, as the fixed wait did. A resume
    # that races a batch after all is harmless: the ledger moves and counts an item once.
    deadline = time.monotonic() + FINISH_TIMEOUT
    quiet_since, counters = time.monotonic(), None
    while time.monotonic() < deadline:
        assert all(w.poll() is None for w in workers), "a worker exited early"
        with db.connect() as conn:
            job = conn.execute(sa.select(Job.__table__).where(Job.id == job_id)).one()
        if job.status == "finished":
            return job
        idle = not _in_redis(redis, queue)
        if not idle or (job.done, job.failed) != counters:
            quiet_since, counters = time.monotonic(), (job.done, job.failed)
        elif time.monotonic() - quiet_since >= QUIET_BEFORE_RESUME:
            break
        time.sleep(0.2)
    resumed = tagger_cli(env, "jobs", "resume", str(job_id))
    assert resumed.returncode == 0, resumed.stderr
    return wait_for_job(db, job_id, workers, timeout=60)


def _in_redis(redis, queue: str) -> int:
    """Messages in the test's Redis db still waiting in ``queue`` (its priority sub-queues
    included) or delivered and not yet acked (kombu's unacked hash and its index), under
    the key names kombu's Redis transport uses."""
    queues = [queue, *(f"{queue}{Channel.sep}{n}" for n in PRIORITY_STEPS if n)]
    pipe = redis.pipeline()
    for name in queues:
        pipe.llen(name)
    pipe.hlen(Channel.unacked_key).zcard(Channel.unacked_index_key)
    return sum(pipe.execute())
