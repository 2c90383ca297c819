"""Job counters: they move only when an item changes state, so re-delivered and concurrent
batches never miscount."""

from __future__ import annotations

import threading

import sqlalchemy as sa

from tagger.db import Item, Job
from tagger.jobs import create_job, record_outcomes
from tagger.progress import describe_jobs


def _job(session_factory, n=6):
    with session_factory.begin() as s:
        s.add_all([Item(item_id=f"i{k}", image_uri=f"/x/{k}.jpg") for k in range(n)])
        s.flush()
        return create_job(
            session=s, kind="import", source="t", item_ids=[f"i{k}" for k in range(n)], batch_size=3
        ).id


def _counts(session_factory, job_id):
    with session_factory() as s:
        j = s.get(Job, job_id)
        return j.status, j.done, j.failed


def test_redelivered_batch_counts_once(session_factory):
    """Recording the same outcomes twice leaves the counters as after the first time."""
    job_id = _job(session_factory)
    for _ in range(2):
        with session_factory.begin() as s:
            record_outcomes(session=s, job_id=job_id, tagged=["i0", "i1"], failed=["i2"])
    assert _counts(session_factory, job_id) == ("running", 2, 1)


def test_job_finishes_when_every_item_has_an_outcome(session_factory):
    """The job turns finished exactly when done + failed reaches total."""
    job_id = _job(session_factory)
    with session_factory.begin() as s:
        record_outcomes(session=s, job_id=job_id, tagged=["i0", "i1", "i2"], failed=[])
    with session_factory.begin() as s:
        record_outcomes(session=s, job_id=job_id, tagged=["i3", "i4"], failed=["i5"])
    assert _counts(session_factory, job_id) == ("finished", 5, 1)


def test_failed_item_tagged_later_moves_between_counters(session_factory):
    """An item that failed and is then tagged counts as done, not as both."""
    job_id = _job(session_factory)
    with session_factory.begin() as s:
        record_outcomes(session=s, job_id=job_id, tagged=[], failed=["i0"])
    with session_factory.begin() as s:
        record_outcomes(session=s, job_id=job_id, tagged=["i0"], failed=[])
    assert _counts(session_factory, job_id) == ("running", 1, 0)


def test_concurrent_batches_on_postgres_do_not_lose_updates(session_factory):
    """Eight threads recording disjoint and duplicate outcomes at once add up exactly."""
    job_id = _job(session_factory, n=40)
    batches = [[f"i{k}" for k in range(b * 5, b * 5 + 5)] for b in range(8)]
    barrier = threading.Barrier(16)

    def work(ids):
        barrier.wait()
        with session_factory.begin() as s:
            record_outcomes(session=s, job_id=job_id, tagged=ids, failed=[])

    threads = [threading.Thread(target=work, args=(b,)) for b in batches + batches]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert _counts(session_factory, job_id) == ("finished", 40, 0)


def test_describe_one_job_lists_failures_by_reason(session_factory):
    """`tagger jobs ID` rows carry the failure counts by reason."""
    from tagger.exceptions import MissingImage, NotAnImage
    from tagger.tags import save_batch

    job_id = _job(session_factory, n=3)
    with session_factory.begin() as s:
        save_batch(
            session=s,
            job_id=job_id,
            model_version="",
            predictions={},
            failures={
                "i0": MissingImage("gone"),
                "i1": MissingImage("gone"),
                "i2": NotAnImage("html"),
            },
        )
    with session_factory() as s:
        (row,) = describe_jobs(session=s, stall_after=3600, job_id=job_id)
        assert row["failures"] == "missing_image=2, not_an_image=1"
        assert row["status"] == "finished" and row["failed"] == 3
        assert s.scalar(sa.select(sa.func.count()).select_from(Job)) == 1
