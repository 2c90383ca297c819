"""The re-tag sweep queues exactly the stale, changed and due-for-retry items, once."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
import sqlalchemy as sa

from tagger.current import refresh_current_tags
from tagger.db import Failure, Item, Job, JobBatch, Tag, utcnow
from tagger.jobs import create_job
from tagger.ledger import item_states
from tagger.settings import Settings
from tagger.states import JobKind, JobStatus
from tagger.sweep import plan_sweep
from tests.factories import add_model_version

SETTINGS = Settings(retry_failed_after=3600, max_failure_attempts=3, stall_after=7200)
HOUR = timedelta(hours=1)


def _version(s, name, active):
    add_model_version(s, name, activate=active)


def _tag(item, version, at):
    return Tag(
        item_id=item,
        model_version=version,
        gender="MEN",
        gender_score=0.9,
        product_type="Dresses",
        product_score=0.9,
        scores={},
        tagged_at=at,
    )


def _catalogue(session_factory):
    """One item for each case the sweep must tell apart."""
    now = utcnow()
    with session_factory.begin() as s:
        _version(s, "old", active=True)  # served before "new": its tags may show
        _version(s, "new", active=True)
        s.add_all(
            [
                Item(item_id=i, image_uri=f"/img/{i}.jpg", updated_at=now - 10 * HOUR)
                for i in (
                    "fresh",
                    "untagged",
                    "old-only",
                    "changed",
                    "fail-due",
                    "fail-wait",
                    "fail-max",
                    "fail-changed",
                    "busy",
                    "stalled",
                )
            ]
        )
        s.flush()
        s.get(Item, "changed").updated_at = now - HOUR  # image replaced after tagging
        s.get(Item, "fail-changed").updated_at = now - HOUR
        s.add_all(
            [
                _tag("fresh", "new", now - 2 * HOUR),
                _tag("old-only", "old", now - 5 * HOUR),
                _tag("changed", "new", now - 2 * HOUR),
                _tag("busy", "old", now - 5 * HOUR),
                _tag("stalled", "old", now - 5 * HOUR),
            ]
        )
        s.flush()
        # Tags written directly, as workers do not: what they show is chosen again, as an
        # activation does.
        refresh_current_tags(session=s)
        s.add_all(
            [
                # 1 attempt, 2 h ago: back-off 1 h passed → due.
                Failure(
                    item_id="fail-due",
                    reason="missing_image",
                    message="x",
                    attempts=1,
                    last_seen=now - 2 * HOUR,
                ),
                # 2 attempts, 1.5 h ago: back-off 2 h not yet passed.
                Failure(
                    item_id="fail-wait",
                    reason="missing_image",
                    message="x",
                    attempts=2,
                    last_seen=now - 1.5 * HOUR,
                ),
                # 3 attempts = the maximum: never again (until the image changes).
                Failure(
                    item_id="fail-max",
                    reason="corrupt_image",
                    message="x",
                    attempts=3,
                    last_seen=now - 5 * HOUR,
                ),
                # failed, then the image was replaced: stale again at once.
                Failure(
                    item_id="fail-changed",
                    reason="corrupt_image",
                    message="x",
                    attempts=3,
                    last_seen=now - 2 * HOUR,
                ),
            ]
        )
        busy = create_job(
            session=s, kind=JobKind.IMPORT, source="t", item_ids=["busy"], batch_size=1
        )
        stalled = create_job(
            session=s, kind=JobKind.IMPORT, source="t", item_ids=["stalled"], batch_size=1
        )
        s.flush()
        stalled_job = s.get(Job, stalled.id)
        stalled_job.status, stalled_job.updated_at = JobStatus.RUNNING, now - 3 * HOUR
        assert busy.id != stalled.id


def _queued(plan):
    return sorted(i for batch in plan.batches for i in batch)


@pytest.fixture
def sqlite_sessions(tmp_path):
    """A session factory over a migrated SQLite file (the embedded mode's database)."""
    from tagger.db import make_engine, make_session_factory, upgrade

    url = f"sqlite:///{tmp_path / 'embedded.db'}"
    upgrade(url)
    engine = make_engine(url)
    yield make_session_factory(engine)
    engine.dispose()


def test_sweep_queues_exactly_stale_changed_and_due_items(session_factory):
    """New-version gaps, changed images, due failures and stalled jobs' items; nothing else."""
    _catalogue(session_factory)
    with session_factory.begin() as s:
        plan = plan_sweep(session=s, settings=SETTINGS)
    assert _queued(plan) == sorted(
        ["untagged", "old-only", "changed", "fail-changed", "stalled", "fail-due"]
    )
    assert (plan.stale, plan.failed) == (5, 1)
    with session_factory() as s:
        job = s.get(Job, plan.job.id)
        assert (job.kind, job.total, job.status) == ("retag", 6, "queued")


def test_sweep_on_sqlite_queues_the_same_items_and_hands_over(sqlite_sessions):
    """The embedded mode's SQLite plans the same job, hand-over included."""
    _catalogue(sqlite_sessions)
    with sqlite_sessions.begin() as s:
        plan = plan_sweep(session=s, settings=SETTINGS)
    assert _queued(plan) == sorted(
        ["untagged", "old-only", "changed", "fail-changed", "stalled", "fail-due"]
    )
    assert (plan.stale, plan.failed, plan.moved) == (5, 1, 1)
    with sqlite_sessions() as s:
        moved = s.scalar(sa.select(Job.moved).where(Job.kind == "import", Job.moved > 0))
        assert moved == 1 and s.get(Job, plan.job_id).total == 6


def test_streamed_plan_is_read_back_in_keyset_pages(session_factory, monkeypatch):
    """Without with_batches the plan holds no ids; its ledger hands every pending item
    back once, in the same order, in keyset pages of any number of batch rows."""
    from tagger import ledger, pending

    _catalogue(session_factory)
    with session_factory.begin() as s:
        plan = plan_sweep(session=s, settings=SETTINGS, with_batches=False)
        with pytest.raises(RuntimeError, match="from the ledger"):
            _ = plan.batches
    orders = []
    with session_factory.begin() as s:
        s.get(Job, plan.job_id).batch_size = 2
    with session_factory.begin() as s:
        # Rewritten as batches of one item, so that a page of batch rows can be short.
        ids = ledger.pending_ids(session=s, job_id=plan.job_id)
        s.execute(sa.delete(JobBatch).where(JobBatch.job_id == plan.job_id))
        ledger.add_batches(session=s, job_id=plan.job_id, item_ids=ids, batch_size=1)
    with session_factory() as s:
        for page in (1, 2, 4, 100):
            monkeypatch.setattr(ledger, "PAGE_BATCHES", page)
            batches = list(pending.pending_batches(session=s, job_id=plan.job_id, batch_size=2))
            assert [len(b) for b in batches] == [2, 2, 2]
            orders.append([i for b in batches for i in b])
    assert len(set(orders[0])) == plan.total == 6
    assert all(order == orders[0] for order in orders)


def test_sweep_closes_the_stalled_job_it_takes_items_from(session_factory):
    """The stalled job's pending item moves to the sweep's job; the stalled job is closed
    (finished, moved = 1, counters adding up) while the live job keeps its item."""
    _catalogue(session_factory)
    with session_factory.begin() as s:
        plan_sweep(session=s, settings=SETTINGS)
    with session_factory() as s:
        jobs = list(s.scalars(sa.select(Job).where(Job.kind == "import")))
        states = {
            item_id: state
            for job in jobs
            for item_id, state in item_states(session=s, job_id=job.id).items()
            if item_id in ("busy", "stalled")
        }
    stalled, busy = sorted(jobs, key=lambda j: j.moved, reverse=True)
    assert (stalled.status, stalled.moved, stalled.done + stalled.failed + stalled.moved) == (
        "finished",
        1,
        stalled.total,
    )
    assert (busy.status, busy.moved) == ("queued", 0)
    assert states == {"stalled": "moved", "busy": "pending"}


def test_flags_select_parts_and_limit_bounds_the_sweep(session_factory):
    """--failed alone queues only due failures; --all everything not busy; --limit caps it."""
    _catalogue(session_factory)
    with session_factory.begin() as s:
        assert _queued(plan_sweep(session=s, settings=SETTINGS, stale=False)) == ["fail-due"]
        s.rollback()
    with session_factory.begin() as s:
        everything = _queued(plan_sweep(session=s, settings=SETTINGS, all_=True))
        assert "busy" not in everything and len(everything) == 9
        s.rollback()
    with session_factory.begin() as s:
        plan = plan_sweep(session=s, settings=SETTINGS, limit=2, batch_size=1)
        assert len(_queued(plan)) == 2 and len(plan.batches) == 2


def test_second_sweep_finds_nothing_left(session_factory):
    """Right after a sweep, the same sweep queues nothing and creates no job."""
    _catalogue(session_factory)
    with session_factory.begin() as s:
        assert plan_sweep(session=s, settings=SETTINGS).job is not None
    with session_factory.begin() as s:
        again = plan_sweep(session=s, settings=SETTINGS)
    assert again.job is None and again.batches == []


def test_two_concurrent_sweeps_queue_the_work_once(session_factory):
    """A sweep started while another one's transaction is still open queues nothing twice."""
    _catalogue(session_factory)
    planned = threading.Event()
    plans = []

    def first():
        with session_factory.begin() as s:
            plans.append(plan_sweep(session=s, settings=SETTINGS))
            planned.set()
            time.sleep(0.5)  # keep the transaction open while the second sweep runs

    def second():
        planned.wait()
        with session_factory.begin() as s:
            plans.append(plan_sweep(session=s, settings=SETTINGS))

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    queued = sorted(i for p in plans for i in _queued(p))
    assert len(queued) == 6 and len(set(queued)) == 6
    assert sorted(p.job is None for p in plans) == [False, True]
    with session_factory() as s:
        retags = s.scalars(sa.select(Job.id).where(Job.kind == "retag")).all()
        members = [i for j in retags for i in item_states(session=s, job_id=j)]
        assert sorted(members) == sorted(set(members)) and len(members) == 6
