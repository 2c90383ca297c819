"""Job progress: throughput, ETA, and stalled jobs shown as stalled."""

from __future__ import annotations

from datetime import timedelta

import pytest

from tagger.db import Job, utcnow
from tagger.exceptions import UnknownJob
from tagger.progress import job_snapshot, job_stats
from tagger.states import JobKind, JobStatus


def _job(**kw):
    now = utcnow()
    base = dict(
        id=1,
        kind=JobKind.IMPORT,
        status=JobStatus.RUNNING,
        total=100,
        done=40,
        failed=10,
        skipped=0,
        batch_size=10,
        started_at=now - timedelta(seconds=50),
        updated_at=now,
        finished_at=None,
    )
    base.update(kw)
    return Job(**base)


def test_rate_and_eta_from_counters():
    """50 items in 50 s is 1 item/s, so 50 remaining take 50 s."""
    stats = job_stats(_job(), now=utcnow(), stall_after=3600)
    assert stats.state == "running" and stats.processed == 50
    assert abs(stats.rate - 1.0) < 0.05 and abs(stats.eta_s - 50) < 3


def test_job_without_progress_is_stalled():
    """An active job whose counters have not moved for stall_after seconds is stalled."""
    old = utcnow() - timedelta(hours=3)
    stats = job_stats(
        _job(updated_at=old, started_at=old - timedelta(minutes=1)), now=utcnow(), stall_after=7200
    )
    assert stats.state == "stalled"


def test_finished_job_is_never_stalled():
    """A finished job keeps its status however old it is."""
    old = utcnow() - timedelta(days=3)
    stats = job_stats(
        _job(
            status=JobStatus.FINISHED,
            done=90,
            updated_at=old,
            finished_at=old,
            started_at=old - timedelta(seconds=100),
        ),
        now=utcnow(),
        stall_after=60,
    )
    assert stats.state == "finished" and stats.eta_s == 0.0 and abs(stats.rate - 1.0) < 0.01


def test_job_not_started_has_no_rate():
    """Before any batch ran there is no throughput to report."""
    stats = job_stats(
        _job(status=JobStatus.QUEUED, done=0, failed=0, started_at=None),
        now=utcnow(),
        stall_after=3600,
    )
    assert stats.rate is None and stats.eta_s is None and stats.remaining == 100


def test_snapshot_of_a_stored_job(session_factory):
    """One poll reads the job's counters and stats; an old active job is stalled, not
    active; an unknown id raises UnknownJob."""
    with session_factory.begin() as session:
        session.add(_job(id=5, updated_at=utcnow() - timedelta(hours=3)))
    with session_factory() as session:
        snap = job_snapshot(session=session, job_id=5, stall_after=60)
        assert (snap.job_id, snap.total, snap.done, snap.failed, snap.moved) == (5, 100, 40, 10, 0)
        assert snap.stats.state == "stalled" and not snap.active
        assert job_snapshot(session=session, job_id=5, stall_after=7 * 3600).active
        with pytest.raises(UnknownJob):
            job_snapshot(session=session, job_id=6, stall_after=60)
