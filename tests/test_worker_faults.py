"""Workers that die or hang, with real `tagger worker` processes: a poison item that kills
its worker every time is isolated and failed as worker_crash, a hung batch is cut off by
the time limits and isolated the same way, and a batch lost with its whole worker comes
back in minutes. Every test checks one tag per good item, one failure per bad one, and
job counters that add up."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time

import pytest
import sqlalchemy as sa

from tagger.db import Failure, JobItem, current_tags
from tests.factories import jpeg_bytes, write_csv
from tests.processes import start_worker, stop, wait_for_job
from tests.traps import FifoTrap

pytestmark = pytest.mark.slow


@pytest.fixture
def env(settings_env) -> dict[str, str]:
    return {**os.environ, "TAGGER_LOG_LEVEL": "INFO", "TAGGER_FETCH_CONCURRENCY": "4"}


def _catalogue(tmp_path, n_good: int, bad: str) -> tuple[list[dict], list[str]]:
    """``n_good`` local JPEG items plus one item ``bad`` whose image is a FIFO trap."""
    images = tmp_path / "images"
    images.mkdir()
    rows = []
    for i in range(n_good):
        path = images / f"good-{i}.jpg"
        path.write_bytes(jpeg_bytes(seed=i))
        rows.append({"item_id": f"good-{i}", "image_uri": str(path), "title": f"item {i}"})
    rows.append({"item_id": bad, "image_uri": str(images / f"{bad}.jpg"), "title": "bad"})
    return rows, [r["item_id"] for r in rows[:-1]]


def _import(cli, env, artifact, tmp_path, rows, batch_size: int) -> int:
    reg = cli(env, "model", "register", artifact, "--activate", "--version", "v1")
    assert reg.returncode == 0, reg.stderr
    imp = cli(env, "import", str(write_csv(tmp_path / "cat.csv", rows)), "--batch-size",
                 str(batch_size))  # fmt: skip
    assert imp.returncode == 0, imp.stderr
    return int(imp.stdout)


def _ledger(db, job_id):
    with db.connect() as conn:
        tags = conn.execute(sa.select(current_tags.c.item_id)).scalars().all()
        failures = dict(conn.execute(sa.select(Failure.item_id, Failure.reason)).all())
        items = {
            r.item_id: r
            for r in conn.execute(sa.select(JobItem.__table__).where(JobItem.job_id == job_id))
        }
    return tags, failures, items


def test_poison_item_that_kills_its_worker_is_isolated(db, env, artifact, tmp_path, tagger_cli):
    """An item whose fetch kills the worker process every time: after max_batch_deaths
    deaths the batch is split in halves, down to the item alone, which is failed as
    worker_crash; the other three are tagged and the job finishes with true counters."""
    rows, good = _catalogue(tmp_path, 3, "poison")
    env = {**env, "TAGGER_MAX_BATCH_DEATHS": "2"}
    job_id = _import(tagger_cli, env, artifact, tmp_path, rows, batch_size=4)
    trap = FifoTrap(tmp_path / "images" / "poison.jpg", "kill")
    worker = start_worker(env, "w1", tmp_path / "worker.log")
    try:
        job = wait_for_job(db, job_id, [worker], timeout=400)
    finally:
        stop([worker])
        trap.close()

    assert (job.total, job.done, job.failed, job.moved) == (4, 3, 1, 0)
    tags, failures, items = _ledger(db, job_id)
    assert sorted(tags) == sorted(good)
    assert failures == {"poison": "worker_crash"}
    # Two deaths at each size: the batch of 4, its half of 2, then the item alone.
    assert trap.kills == 6
    # Deliveries of the poison item: 6 that died, 2 that split, the last that failed it.
    assert (items["poison"].attempts, items["poison"].deaths) == (9, 6)
    assert all(items[i].state == "tagged" and items[i].started_at is None for i in good)
    shown = tagger_cli(env, "jobs", str(job_id), "--format", "json")
    (row,) = json.loads(shown.stdout)
    assert (row["redelivered"], row["died"], row["failures"]) == (4, 4, "worker_crash=1")


def test_hung_batch_is_cut_off_and_its_item_isolated(db, env, artifact, tmp_path, tagger_cli):
    """An item whose read never returns: the batch time limit (derived from a 60 s
    visibility timeout) cuts each delivery off, it comes back at once, and after one death
    per level the hung item is failed as worker_crash while the other three are tagged."""
    rows, good = _catalogue(tmp_path, 3, "hung")
    env = {
        **env,
        "TAGGER_MAX_BATCH_DEATHS": "1",
        "TAGGER_VISIBILITY_TIMEOUT": "60",
        "TAGGER_RETRY_BACKOFF_MAX": "5",
    }
    job_id = _import(tagger_cli, env, artifact, tmp_path, rows, batch_size=4)
    trap = FifoTrap(tmp_path / "images" / "hung.jpg", "hang")
    worker = start_worker(env, "w1", tmp_path / "worker.log")
    started = time.monotonic()
    try:
        job = wait_for_job(db, job_id, [worker], timeout=400)
    finally:
        stop([worker])
        trap.close()
    elapsed = time.monotonic() - started

    assert (job.total, job.done, job.failed) == (4, 3, 1)
    tags, failures, items = _ledger(db, job_id)
    assert sorted(tags) == sorted(good)
    assert failures == {"hung": "worker_crash"}
    assert items["hung"].deaths == 3  # the batch of 4, the half of 2, the item alone
    log = (tmp_path / "worker.log").read_text()
    assert "time limit" in log, log[-2000:]
    # Three deliveries cut off at the 25 s hard limit at most, each handed straight back,
    # plus model loads; left for the visibility timeout it would take over 3 x (25 + 60) s.
    assert elapsed < 220, elapsed


def test_batch_lost_with_its_whole_worker_comes_back(db, env, artifact, tmp_path, tagger_cli):
    """The whole worker (main process and pool) is SIGKILLed mid-batch, so nobody hands the
    batch back: Redis re-delivers it after the visibility timeout, found by a restore sweep
    every 10 s, and a new worker tags it; nothing is lost or tagged twice."""
    rows, good = _catalogue(tmp_path, 3, "slow")
    env = {**env, "TAGGER_VISIBILITY_TIMEOUT": "60", "TAGGER_RETRY_BACKOFF_MAX": "5"}
    job_id = _import(tagger_cli, env, artifact, tmp_path, rows, batch_size=4)
    fifo = tmp_path / "images" / "slow.jpg"
    os.mkfifo(fifo)
    first = start_worker(env, "w1", tmp_path / "w1.log")
    second = None
    try:
        # The worker opens the FIFO (blocking) once it is fetching the batch.
        fd = _open_when_read(fifo, first, timeout=120)
        first_started = _ledger(db, job_id)[2]["slow"].started_at
        _kill_tree(first.pid)
        os.close(fd)
        fifo.unlink()
        (tmp_path / "images" / "slow.jpg").write_bytes(jpeg_bytes(seed=99))
        second = start_worker(env, "w2", tmp_path / "w2.log")
        second_started = _second_start(db, job_id, "slow", [second])
        job = wait_for_job(db, job_id, [second], timeout=300)
    finally:
        stop([w for w in (first, second) if w is not None])

    assert (job.total, job.done, job.failed) == (4, 4, 0)
    tags, failures, items = _ledger(db, job_id)
    assert sorted(tags) == sorted([*good, "slow"]) and failures == {}
    assert items["slow"].attempts == 2 and items["slow"].deaths == 1
    # Both deliveries' start times are in the ledger. The second came no sooner than the
    # 60 s visibility timeout, and within one 10 s restore sweep (plus the new worker's
    # start) after it; kombu's default sweep (every 100 s) would take over 100 s.
    back_after = (second_started - first_started).total_seconds()
    print(f"lost batch delivered again {back_after:.1f} s after the first delivery")
    assert 60 <= back_after < 90, back_after


def _second_start(db, job_id, item_id, workers, timeout=300):
    """When the second delivery of the item's batch started (from the ledger)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert all(w.poll() is None for w in workers), "a worker exited early"
        row = _ledger(db, job_id)[2][item_id]
        if row.attempts >= 2:
            return row.started_at
        time.sleep(0.2)
    raise AssertionError("the lost batch never came back")


def _open_when_read(fifo, worker, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert worker.poll() is None, "worker exited"
        try:
            return os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError:
            time.sleep(0.05)
    raise AssertionError("the worker never read the image")


def _kill_tree(pid: int) -> None:
    """SIGKILL a process and its children at once: a machine lost, not a graceful stop."""
    children = []
    for proc in os.listdir("/proc"):
        if proc.isdigit():
            try:
                with open(f"/proc/{proc}/stat") as fh:
                    if int(fh.read().rsplit(")", 1)[1].split()[1]) == pid:
                        children.append(int(proc))
            except OSError:
                continue
    for p in [pid, *children]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(p, signal.SIGKILL)
