"""The re-tag sweep (nightly from beat, or `tagger retag`): Postgres is the ledger of what
still needs a tag, so the queue can always be rebuilt from it.

It queues, as one ``retag`` job:
- **stale** items: no tag from the active model version (new items, a new roll-out), or
  an image changed since it was tagged (``items.updated_at`` after ``tags.tagged_at``);
- **failed** items due a retry: fewer than ``max_failure_attempts`` attempts and a
  back-off (``retry_failed_after`` doubled per attempt) since the last one;
- with ``all_``, every item.
Items already pending in a job that is still making progress are left alone; items
pending in a stalled job are handed over (that job is closed with them counted as
``moved``). A Postgres advisory lock makes two sweeps fired at once queue the work only
once.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.orm import Session

from tagger.batching import chunked
from tagger.db import Failure, Item, Job, JobItem, Tag, utcnow
from tagger.exceptions import NoActiveModel
from tagger.jobs import create_job, hand_over
from tagger.registry import get_active_model_version
from tagger.settings import Settings
from tagger.states import ACTIVE_STATUSES, ItemState, JobKind

# Arbitrary constant naming the sweep's advisory lock (pg_advisory_xact_lock takes a bigint).
SWEEP_LOCK_KEY = 0x7A66_5E3E


@dataclass(frozen=True)
class SweepPlan:
    job: Job | None
    batches: list[list[str]]
    stale: int
    failed: int


def lock_sweeps(session: Session) -> None:
    """Serialize sweeps until this transaction ends. The second sweep waits, then sees the
    first one's job items as pending and skips them. SQLite writers are serialized anyway."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(sa.select(sa.func.pg_advisory_xact_lock(SWEEP_LOCK_KEY)))


def busy_items(now: datetime, settings: Settings):
    """Ids pending in a queued/running job that made progress recently (not stalled)."""
    return (
        sa.select(JobItem.item_id)
        .join(Job, Job.id == JobItem.job_id)
        .where(
            JobItem.state == ItemState.PENDING,
            Job.status.in_(ACTIVE_STATUSES),
            Job.updated_at >= now - timedelta(seconds=settings.stall_after),
        )
    )


def stale_items(active_version: str, busy):
    tag = sa.orm.aliased(Tag)
    still_failing = sa.exists().where(
        Failure.item_id == Item.item_id, Failure.last_seen >= Item.updated_at
    )
    return (
        sa.select(Item.item_id)
        .outerjoin(tag, sa.and_(tag.item_id == Item.item_id, tag.model_version == active_version))
        .where(
            sa.or_(tag.item_id.is_(None), tag.tagged_at < Item.updated_at),
            ~still_failing,
            Item.item_id.not_in(busy),
        )
        .order_by(Item.updated_at, Item.item_id)
    )


def failed_items_due(now: datetime, settings: Settings, busy):
    # One condition per attempt count keeps the exponential back-off portable SQL.
    due = [
        sa.and_(
            Failure.attempts == n,
            Failure.last_seen
            <= now - timedelta(seconds=settings.retry_failed_after * 2 ** (n - 1)),
        )
        for n in range(1, settings.max_failure_attempts)
    ]
    if not due:
        return None
    return (
        sa.select(Failure.item_id)
        .where(sa.or_(*due), Failure.item_id.not_in(busy))
        .order_by(Failure.last_seen, Failure.item_id)
    )


def plan_sweep(
    *,
    session: Session,
    settings: Settings,
    stale: bool = True,
    failed: bool = True,
    all_: bool = False,
    limit: int | None = None,
    source: str = "sweep",
    batch_size: int | None = None,
) -> SweepPlan:
    """Choose the work and create the job (in the caller's transaction; publish after it
    commits). Returns a plan without a job when there is nothing to do."""
    lock_sweeps(session)
    active = get_active_model_version(session=session)
    if active is None:
        raise NoActiveModel("no active model version: nothing to re-tag with")
    now = utcnow()
    limit = limit or settings.retag_limit
    busy = busy_items(now, settings)
    chosen: dict[str, None] = {}
    n_stale = n_failed = 0
    if all_:
        query = sa.select(Item.item_id).where(Item.item_id.not_in(busy)).order_by(Item.item_id)
        chosen.update(dict.fromkeys(session.scalars(query.limit(limit))))
        n_stale = len(chosen)
    else:
        if stale:
            query = stale_items(active.version, busy).limit(limit)
            chosen.update(dict.fromkeys(session.scalars(query)))
            n_stale = len(chosen)
        if failed and len(chosen) < limit:
            query = failed_items_due(now, settings, busy)
            if query is not None:
                for item_id in session.scalars(query.limit(limit - len(chosen))):
                    if item_id not in chosen:
                        chosen[item_id] = None
                        n_failed += 1
    if not chosen:
        return SweepPlan(job=None, batches=[], stale=0, failed=0)
    size = batch_size or settings.batch_size
    ids = list(chosen)
    job = create_job(
        session=session, kind=JobKind.RETAG, source=source, item_ids=ids, batch_size=size
    )
    # Items still pending in stalled jobs are this job's now; those jobs are closed once
    # nothing of theirs is left, with their counters adding up (done + failed + moved).
    hand_over(session=session, item_ids=ids, to_job_id=job.id)
    return SweepPlan(job=job, batches=list(chunked(ids, size)), stale=n_stale, failed=n_failed)
