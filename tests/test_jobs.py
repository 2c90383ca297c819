"""Job counters: they move only when an item changes state, so re-delivered and concurrent
batches never miscount."""

from __future__ import annotations

import threading

import sqlalchemy as sa

from tagger.db import Job, JobItem
from tagger.jobs import create_job, hand_over, record_outcomes
from tagger.ledger import item_states
from tagger.progress import describe_jobs
from tagger.states import JobKind
from tests.factories import ledger_rows, make_job


def _counts(session_factory, job_id):
    with session_factory() as s:
        j = s.get(Job, job_id)
        return j.status, j.done, j.failed


def test_redelivered_batch_counts_once(session_factory):
    """Recording the same outcomes twice leaves the counters as after the first time."""
    job_id = make_job(session_factory)
    for _ in range(2):
        with session_factory.begin() as s:
            record_outcomes(
                session=s, job_id=job_id, tagged=["i0", "i1"], failed={"i2": "corrupt_image"}
            )
    assert _counts(session_factory, job_id) == ("running", 2, 1)


def test_job_finishes_when_every_item_has_an_outcome(session_factory):
    """The job turns finished exactly when done + failed reaches total."""
    job_id = make_job(session_factory)
    with session_factory.begin() as s:
        record_outcomes(session=s, job_id=job_id, tagged=["i0", "i1", "i2"], failed={})
    with session_factory.begin() as s:
        record_outcomes(
            session=s, job_id=job_id, tagged=["i3", "i4"], failed={"i5": "corrupt_image"}
        )
    assert _counts(session_factory, job_id) == ("finished", 5, 1)


def test_failed_item_tagged_later_moves_between_counters(session_factory):
    """An item that failed and is then tagged counts as done, not as both."""
    job_id = make_job(session_factory)
    with session_factory.begin() as s:
        record_outcomes(session=s, job_id=job_id, tagged=[], failed={"i0": "corrupt_image"})
    with session_factory.begin() as s:
        record_outcomes(session=s, job_id=job_id, tagged=["i0"], failed={})
    assert _counts(session_factory, job_id) == ("running", 1, 0)


def test_concurrent_batches_on_postgres_do_not_lose_updates(session_factory):
    """Eight threads recording disjoint and duplicate outcomes at once add up exactly."""
    job_id = make_job(session_factory, n=40)
    batches = [[f"i{k}" for k in range(b * 5, b * 5 + 5)] for b in range(8)]
    barrier = threading.Barrier(16)

    def work(ids):
        barrier.wait()
        with session_factory.begin() as s:
            record_outcomes(session=s, job_id=job_id, tagged=ids, failed={})

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

    job_id = make_job(session_factory, n=3)
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


def test_each_job_keeps_the_reason_its_items_failed_with(session_factory):
    """An item that fails again in a later job for another reason, or is tagged there,
    leaves the earlier job's failures by reason as they were; a failure row from before
    the ledger kept reasons still counts."""
    from tagger.db import Failure
    from tagger.exceptions import MissingImage, NotAnImage
    from tagger.jobs import failure_counts
    from tagger.tags import save_batch

    first = make_job(session_factory, n=3)
    with session_factory.begin() as s:
        failures = {"i0": MissingImage("gone"), "i1": MissingImage("gone")}
        save_batch(session=s, job_id=first, model_version="", predictions={}, failures=failures)
        second = create_job(
            session=s, kind=JobKind.RETAG, source="t", item_ids=["i0", "i1", "i2"], batch_size=3
        ).id
        save_batch(
            session=s,
            job_id=second,
            model_version="",
            predictions={},
            failures={"i0": NotAnImage("html"), "i1": NotAnImage("html")},
        )
    with session_factory.begin() as s:
        assert failure_counts(session=s, job_id=first) == {"missing_image": 2}
        assert failure_counts(session=s, job_id=second) == {"not_an_image": 2}
        # a ledger row written before job_items.reason existed: the failures row answers
        s.execute(sa.update(JobItem).where(JobItem.job_id == first).values(reason=None))
        assert failure_counts(session=s, job_id=first) == {"not_an_image": 2}
        s.execute(sa.delete(Failure))
        assert failure_counts(session=s, job_id=first) == {}


def test_a_failed_item_tagged_on_retry_loses_its_reason(session_factory):
    """A failed item that a later delivery tags is tagged in the ledger, with no reason."""
    job_id = make_job(session_factory)
    with session_factory.begin() as s:
        record_outcomes(session=s, job_id=job_id, tagged=[], failed={"i0": "storage_error"})
    with session_factory.begin() as s:
        record_outcomes(session=s, job_id=job_id, tagged=["i0"], failed={})
    with session_factory() as s:
        row = s.get(JobItem, (job_id, "i0"))
        assert (row.state, row.reason) == ("tagged", None)


def test_hand_over_closes_the_older_job_with_counters_that_add_up(session_factory):
    """Pending items taken by a newer job are moved; the older job finishes with
    done + failed + moved == total and its tagged items untouched."""
    old = make_job(session_factory)
    with session_factory.begin() as s:
        record_outcomes(session=s, job_id=old, tagged=["i0", "i1"], failed={"i2": "corrupt_image"})
        new = create_job(
            session=s, kind=JobKind.RETAG, source="t", item_ids=["i3", "i4", "i5"], batch_size=3
        )
        assert hand_over(session=s, item_ids=["i3", "i4", "i5"], to_job_id=new.id) == {old: 3}
    with session_factory() as s:
        job = s.get(Job, old)
        assert (job.status, job.done, job.failed, job.moved, job.total) == (
            "finished",
            2,
            1,
            3,
            6,
        )
        assert job.finished_at is not None
    states = {k: v[0] for k, v in ledger_rows(session_factory, old).items()}
    assert states == {
        "i0": "tagged",
        "i1": "tagged",
        "i2": "failed",
        "i3": "moved",
        "i4": "moved",
        "i5": "moved",
    }
    with session_factory() as s:
        assert item_states(session=s, job_id=new.id) == dict.fromkeys(["i3", "i4", "i5"], "pending")


def test_partial_hand_over_leaves_the_older_job_running(session_factory):
    """A job that still has pending items of its own stays open after a hand-over."""
    old = make_job(session_factory)
    with session_factory.begin() as s:
        new = create_job(session=s, kind=JobKind.RETAG, source="t", item_ids=["i0"], batch_size=3)
        hand_over(session=s, item_ids=["i0"], to_job_id=new.id)
    with session_factory() as s:
        job = s.get(Job, old)
        assert (job.status, job.moved, job.finished_at) == ("queued", 1, None)
