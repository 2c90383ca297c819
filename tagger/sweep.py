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
``moved``). Shadow jobs (``tagger model compare``: a candidate version's tags, never
shown) count for neither: their items are queued as if they were in no job. A Postgres
advisory lock makes two sweeps fired at once queue the work only once.

Planning is set-based so it stays fast on a 10 M-item catalogue: the job's batches are
written with ``INSERT INTO job_batches ... SELECT`` straight from the queries below
(tagger.ledger), the hand-over is one statement, and the ids never travel to Python; the
caller streams the batches back a page at a time (``tagger.pending``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.orm import Session

from tagger.db import CurrentTagRow, Failure, Item, Job, is_postgres, planner_without, utcnow
from tagger.exceptions import NoActiveModel
from tagger.jobs import hand_over_job, open_job
from tagger.ledger import (
    add_batches,
    member_id,
    members_sql,
    next_seq,
    not_settled,
    pending_ids,
    write_batches,
)
from tagger.pending import pending_batches
from tagger.registry import get_active_model_version
from tagger.settings import Settings
from tagger.states import ACTIVE_STATUSES, JobKind

# Arbitrary constant naming the sweep's advisory lock (pg_advisory_xact_lock takes a bigint).
SWEEP_LOCK_KEY = 0x7A66_5E3E
# Sorting a million stale items by age in 4 MB (Postgres's default) spills to disk; the
# sweep is one statement a night, so it may take more for its own transaction.
SWEEP_WORK_MEM = "256MB"
# The temporary table a plan's chosen ids are collected in (Postgres).
CHOSEN = "sweep_chosen"


@dataclass(frozen=True)
class SweepPlan:
    job: Job | None
    stale: int
    failed: int
    moved: int = 0  # items taken over from stalled jobs
    inline_batches: list[list[str]] | None = field(default=None, repr=False)

    @property
    def job_id(self) -> int | None:
        return self.job.id if self.job is not None else None

    @property
    def total(self) -> int:
        return self.stale + self.failed

    @property
    def batches(self) -> list[list[str]]:
        """The batches as lists, for plans made with ``with_batches=True`` (small ones).
        A streamed plan's batches are read from the ledger in keyset pages:
        ``tagger.pending.pending_batches`` or ``tagger.enqueue.publish_pending``."""
        if self.job is None:
            return []
        if self.inline_batches is None:
            raise RuntimeError(
                f"job {self.job.id}: plan made with with_batches=False; stream its batches "
                "from the ledger (tagger.pending.pending_batches, enqueue.publish_pending)"
            )
        return self.inline_batches


def lock_sweeps(session: Session) -> None:
    """Serialize sweeps until this transaction ends. The second sweep waits, then sees the
    first one's job items as pending and skips them. SQLite writers are serialized anyway."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(sa.select(sa.func.pg_advisory_xact_lock(SWEEP_LOCK_KEY)))
        session.execute(sa.text(f"SET LOCAL work_mem = '{SWEEP_WORK_MEM}'"))


def live_pending(session: Session, now: datetime, settings: Settings) -> sa.Subquery:
    """The items pending in a queued/running job that made progress recently (not stalled):
    the members of those jobs' batches without a settled ledger row. Read once per plan
    and anti-joined (NOT EXISTS): Postgres hashes it, where NOT IN over a large pending set
    is re-scanned per item once it outgrows work_mem.

    Shadow jobs (``tagger model compare``) are left out: they tag with a candidate version
    whose tags are never shown, so an item pending in one still needs the active version's
    tag, and the sweep queues it as if the shadow job were not there."""
    statuses = ", ".join(f"'{s.value}'" for s in ACTIVE_STATUSES)
    since = sa.bindparam(
        "busy_since", now - timedelta(seconds=settings.stall_after), sa.DateTime(timezone=True)
    )
    sql = sa.text(
        f"""
        SELECT {member_id(session)} AS item_id FROM jobs j JOIN {members_sql(session)}
            ON b.job_id = j.id
        WHERE j.status IN ({statuses}) AND j.updated_at >= :busy_since
          AND j.kind <> '{JobKind.SHADOW.value}' AND {not_settled(session, "j.id")}
        """
    ).bindparams(since)
    return sql.columns(sa.column("item_id", sa.String)).subquery("live")


def busy(item_id: sa.ColumnElement, live: sa.Subquery) -> sa.Exists:
    """The item is one of ``live`` (:func:`live_pending`)."""
    return sa.exists().where(live.c.item_id == item_id)


def stale_items(now: datetime, settings: Settings, live: sa.Subquery) -> sa.Select:
    """Items without an up-to-date tag from the active version, oldest change first: never
    tagged (``items.untagged``), or showing a tag that is another version's or older than
    the item's last change (a current row that is not ``fresh``). Both flags have partial
    indexes, so this reads the stale items only, not the catalogue."""
    untagged = sa.select(Item.item_id, Item.updated_at).where(Item.untagged)
    not_fresh = (
        sa.select(Item.item_id, Item.updated_at)
        .join(CurrentTagRow, CurrentTagRow.item_id == Item.item_id)
        .where(sa.not_(CurrentTagRow.fresh))
    )
    stale = sa.union_all(untagged, not_fresh).subquery("stale")
    still_failing = sa.exists().where(
        Failure.item_id == stale.c.item_id, Failure.last_seen >= stale.c.updated_at
    )
    return (
        sa.select(stale.c.item_id)
        .where(~still_failing, ~busy(stale.c.item_id, live))
        .order_by(stale.c.updated_at, stale.c.item_id)
    )


def failed_items_due(now: datetime, settings: Settings, live: sa.Subquery) -> sa.Select | None:
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
        .where(sa.or_(*due), ~busy(Failure.item_id, live))
        .order_by(Failure.last_seen, Failure.item_id)
    )


def all_items(live: sa.Subquery) -> sa.Select:
    return sa.select(Item.item_id).where(~busy(Item.item_id, live)).order_by(Item.item_id)


def add_to_ledger(
    *, session: Session, job_id: int, chosen: sa.Select, limit: int, batch_size: int
) -> int:
    """Write the first ``limit`` ids ``chosen`` selects as batches of the job, in the order
    chosen (oldest first), leaving out any id already in the job (stale and failing);
    returns how many were added."""
    first = next_seq(session=session, job_id=job_id)
    if not is_postgres(session):
        # SQLite (embedded, small): the ids through Python.
        ids = list(dict.fromkeys(session.scalars(chosen.limit(limit))))
        members = set(pending_ids(session=session, job_id=job_id))
        ids = [i for i in ids if i not in members]
        add_batches(
            session=session, job_id=job_id, item_ids=ids, batch_size=batch_size, first_seq=first
        )
        return len(ids)
    rows = chosen.limit(limit).subquery()
    item_id = rows.c[chosen.selected_columns[0].name]
    # Postgres never runs the SELECT of an INSERT in parallel; CREATE TABLE AS may, and
    # choosing is the expensive half. The temporary table goes with the transaction.
    session.execute(sa.text(f"DROP TABLE IF EXISTS {CHOSEN}"))
    chosen_sql = sa.select(item_id.label("item_id")).compile(
        session.get_bind(), compile_kwargs={"literal_binds": True}
    )
    # Without hash joins: hashing ten million item ids to join a million stale current
    # rows with their items took 7.4 s of this statement's 9.4 s at 10 M items; merge
    # joins along the primary keys (or index lookups, for a few stale items) take 5 s.
    with planner_without(session, "hashjoin"):
        session.execute(sa.text(f"CREATE TEMPORARY TABLE {CHOSEN} ON COMMIT DROP AS {chosen_sql}"))
    ids_sql = f"SELECT c.item_id FROM {CHOSEN} c"
    if first:
        ids_sql += (
            f" WHERE NOT EXISTS (SELECT 1 FROM {members_sql(session)} "
            f"WHERE b.job_id = :job AND {member_id(session)} = c.item_id)"
        )
    _, added = write_batches(
        session=session,
        job_id=job_id,
        ids_sql=ids_sql,
        batch_size=batch_size,
        params={"job": job_id},
        first_seq=first,
        in_id_order=False,
    )
    return added


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
    with_batches: bool = True,
) -> SweepPlan:
    """Choose the work and create the job with its ledger (in the caller's transaction;
    publish after it commits). Returns a plan without a job when there is nothing to do.

    ``with_batches`` also reads the batches back into ``plan.batches`` (a list of every
    id: for small plans and callers that do not stream yet); without it the caller
    streams them from the ledger (``publish_pending(job_id=plan.job_id, items=plan.total)``)."""
    lock_sweeps(session)
    active = get_active_model_version(session=session)
    if active is None:
        raise NoActiveModel("no active model version: nothing to re-tag with")
    now = utcnow()
    limit = limit or settings.retag_limit
    size = batch_size or settings.batch_size
    job = open_job(session=session, kind=JobKind.RETAG, source=source, batch_size=size)
    n_stale = n_failed = 0
    live = live_pending(session, now, settings)
    if all_:
        chosen = all_items(live)
        n_stale = add_to_ledger(
            session=session, job_id=job.id, chosen=chosen, limit=limit, batch_size=size
        )
    else:
        if stale:
            chosen = stale_items(now, settings, live)
            n_stale = add_to_ledger(
                session=session, job_id=job.id, chosen=chosen, limit=limit, batch_size=size
            )
        due = failed_items_due(now, settings, live) if failed else None
        if due is not None and n_stale < limit:
            # An item both stale and failing is in the job once, counted as stale.
            n_failed = add_to_ledger(
                session=session,
                job_id=job.id,
                chosen=due,
                limit=limit - n_stale,
                batch_size=size,
            )
    if n_stale + n_failed == 0:
        session.delete(job)
        session.flush()
        return SweepPlan(job=None, stale=0, failed=0, inline_batches=[])
    job.total = n_stale + n_failed
    session.flush()
    # Items still pending in stalled jobs are this job's now; those jobs are closed once
    # nothing of theirs is left, with their counters adding up (done + failed + moved).
    moved = hand_over_job(session=session, to_job_id=job.id)
    batches = (
        list(pending_batches(session=session, job_id=job.id, batch_size=size))
        if with_batches
        else None
    )
    return SweepPlan(
        job=job,
        stale=n_stale,
        failed=n_failed,
        moved=sum(moved.values()),
        inline_batches=batches,
    )
