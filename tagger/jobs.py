"""Jobs and their ledger of items. Counters move only when an item's state changes, with
atomic increments, so at-least-once delivery and concurrent workers never miscount.
The ledger's states and how deliveries are counted: docs/architecture.md ("The data
model", "Failure semantics")."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Session

from tagger.batching import chunked
from tagger.db import Failure, Job, JobItem, insert, is_postgres, utcnow
from tagger.exceptions import UnknownJob
from tagger.ledger import (
    add_batches,
    ids_param,
    ids_source,
    member_id,
    members_sql,
)
from tagger.states import ACTIVE_STATUSES, ItemState, JobKind, JobStatus

# Keep IN (...) lists and multi-row inserts well under driver parameter limits.
CHUNK = 500

# The statuses inside sa.case(...) are untyped literals (no column lends them a type), so
# they are passed as the plain word (.value): what is stored never depends on how
# SQLAlchemy or the driver would treat an Enum member there.


def open_job(
    *,
    session: Session,
    kind: JobKind,
    source: str | None,
    batch_size: int,
    model_version: str | None = None,
) -> Job:
    """A queued job with no items yet (flushed, so it has its id): set-based planners fill
    its ledger with INSERT ... SELECT and then set ``total`` from the row count.
    ``model_version``: a shadow job's version (see :func:`shadow_version`)."""
    now = utcnow()
    job = Job(
        kind=kind,
        source=source,
        status=JobStatus.QUEUED,
        total=0,
        batch_size=batch_size,
        created_at=now,
        updated_at=now,
        model_version=model_version,
    )
    session.add(job)
    session.flush()
    return job


def create_job(
    *,
    session: Session,
    kind: JobKind,
    source: str | None,
    item_ids: Sequence[str],
    batch_size: int,
    skipped: int = 0,
) -> Job:
    """A job over ``item_ids`` (each once), all pending; finished at once when empty."""
    job = open_job(session=session, kind=kind, source=source, batch_size=batch_size)
    now = job.created_at
    job.total, job.skipped = len(item_ids), skipped
    if not item_ids:
        job.status, job.finished_at = JobStatus.FINISHED, now
    session.flush()
    add_batches(session=session, job_id=job.id, item_ids=item_ids, batch_size=batch_size)
    return job


def get_job(*, session: Session, job_id: int) -> Job:
    job = session.get(Job, job_id)
    if job is None:
        raise UnknownJob(f"no job with id {job_id}")
    return job


def shadow_version(*, session: Session, job_id: int) -> str | None:
    """The version a shadow job tags its items with (``tagger model compare``); None for
    every other job, which tags with whichever version is active when a batch runs.

    A shadow job's tags are stored under that version and never shown as current, and its
    failures stay in its own ledger (tagger.tags.save_batch); the sweep neither counts its
    pending items as busy nor takes them over (tagger.sweep, :func:`hand_over_job`)."""
    return session.scalar(
        sa.select(Job.model_version).where(Job.id == job_id, Job.kind == JobKind.SHADOW.value)
    )


def list_jobs(*, session: Session, limit: int = 20) -> list[Job]:
    return list(session.scalars(sa.select(Job).order_by(Job.id.desc()).limit(limit)))


def failure_counts(*, session: Session, job_id: int) -> dict[str, int]:
    """Failures by reason for the items of a job: the reason its ledger row keeps, or for
    rows from before it kept one, the item's row in ``failures``."""
    reason = sa.func.coalesce(JobItem.reason, Failure.reason)
    rows = session.execute(
        sa.select(reason, sa.func.count())
        .select_from(JobItem)
        .outerjoin(Failure, Failure.item_id == JobItem.item_id)
        .where(JobItem.job_id == job_id, JobItem.state == ItemState.FAILED, reason.is_not(None))
        .group_by(reason)
        .order_by(reason)
    ).all()
    return {str(r): int(n) for r, n in rows}


def mark_started(*, session: Session, job_id: int) -> None:
    """A worker took up a batch of the job: set started_at once, queued → running."""
    now = utcnow()
    session.execute(
        sa.update(Job)
        .where(Job.id == job_id, Job.started_at.is_(None))
        .values(
            started_at=now,
            updated_at=now,
            status=sa.case(
                (Job.status == JobStatus.QUEUED, JobStatus.RUNNING.value), else_=Job.status
            ),
        )
    )


def record_outcomes(
    *, session: Session, job_id: int, tagged: Sequence[str], failed: Mapping[str, str]
) -> None:
    """Move the job's items to tagged/failed (``failed``: item id → reason, kept on the
    item's ledger row) and bump the counters by what actually moved.

    A re-delivered batch finds its items already moved (rowcount 0) and counts nothing; a
    concurrent duplicate blocks on the same rows and then finds them moved too.
    """
    now = utcnow()

    def move(ids: Sequence[str], to: ItemState, frm: ItemState) -> int:
        moved = 0
        for chunk in chunked(sorted(ids), CHUNK):
            result = session.execute(
                sa.update(JobItem)
                .where(
                    JobItem.job_id == job_id,
                    JobItem.item_id.in_(chunk),
                    JobItem.state == frm,
                )
                .values(state=to, reason=None, updated_at=now)
            )
            moved += result.rowcount
        return moved

    def settle(reasons: Mapping[str, str | None], to: ItemState) -> int:
        # Pending items, with a row (delivered) or without (never delivered), move to
        # ``to``; settled ones stay as they are and count nothing.
        settled = 0
        for chunk in chunked(sorted(reasons), CHUNK):
            rows = [
                {
                    "job_id": job_id,
                    "item_id": i,
                    "state": to,
                    "reason": reasons[i],
                    "updated_at": now,
                }
                for i in chunk
            ]
            statement = insert(session, JobItem).values(rows)
            statement = statement.on_conflict_do_update(
                index_elements=[JobItem.job_id, JobItem.item_id],
                set_={"state": to.value, "reason": statement.excluded.reason, "updated_at": now},
                where=JobItem.state == ItemState.PENDING,
            ).returning(JobItem.item_id)
            settled += len(session.execute(statement).all())
        return settled

    # Failed to tagged first: a row that is failed now must not count as newly tagged.
    tagged_after_failure = move(tagged, ItemState.TAGGED, ItemState.FAILED)
    tagged_new = settle(dict.fromkeys(tagged), ItemState.TAGGED)
    failed_new = settle(failed, ItemState.FAILED)
    done_delta = tagged_new + tagged_after_failure
    failed_delta = failed_new - tagged_after_failure
    complete = Job.done + done_delta + Job.failed + failed_delta + Job.moved >= Job.total
    session.execute(
        sa.update(Job)
        .where(Job.id == job_id)
        .values(
            done=Job.done + done_delta,
            failed=Job.failed + failed_delta,
            updated_at=now,
            started_at=sa.func.coalesce(Job.started_at, now),
            status=sa.case((complete, JobStatus.FINISHED.value), else_=JobStatus.RUNNING.value),
            finished_at=sa.case((complete, sa.func.coalesce(Job.finished_at, now)), else_=None),
        )
    )


def hand_over(*, session: Session, item_ids: Sequence[str], to_job_id: int) -> dict[int, int]:
    """Items pending in older jobs now belong to job ``to_job_id``: mark them ``moved``
    there and close each older job whose items are all accounted for, so no job stays
    ``running`` forever with items another job took. Returns items moved per job."""
    mine = ids_source(session, "mine")
    return _hand_over(session, to_job_id, mine, {"mine": ids_param(session, item_ids)})


def hand_over_job(*, session: Session, to_job_id: int) -> dict[int, int]:
    """``hand_over`` for every member of job ``to_job_id``, in one statement: the ids never
    travel to Python. Returns items moved per older job."""
    # Its own aliases b and m shadow the outer statement's inside this subquery.
    mine = (
        f"SELECT {member_id(session)} AS item_id FROM {members_sql(session)} WHERE b.job_id = :to"
    )

    return _hand_over(session, to_job_id, mine, {})


def _hand_over(
    session: Session, to_job_id: int, mine: str, params: dict[str, object]
) -> dict[int, int]:
    now = utcnow()
    others = [s.value for s in ACTIVE_STATUSES]
    shadow = JobKind.SHADOW.value
    # Only queued/running jobs have pending items; most of the time there are none besides
    # this one, and then there is nothing to read. A shadow job's items are never taken
    # over: it tags with another version, so its pending items are not the sweep's work.
    if not session.scalar(
        sa.select(
            sa.exists().where(Job.status.in_(others), Job.id != to_job_id, Job.kind != shadow)
        )
    ):
        return {}
    statuses = ", ".join(f"'{s}'" for s in others)
    # Every pending member of another live job that is also one of ``mine`` gets (or turns
    # its pending row into) a ``moved`` row; settled rows stay as they are.
    taken = f"""
        INSERT INTO job_items (job_id, item_id, state, updated_at, attempts, deaths)
        SELECT b.job_id, {member_id(session)}, :moved, :now, 0, 0
        FROM jobs j JOIN {members_sql(session)} ON b.job_id = j.id
        WHERE j.status IN ({statuses}) AND j.id <> :to AND j.kind <> :shadow
          AND {member_id(session)} IN (SELECT item_id FROM ({mine}) mine)
        ON CONFLICT (job_id, item_id) DO UPDATE SET
            state = excluded.state, started_at = NULL, updated_at = excluded.updated_at
        WHERE job_items.state = :pending
        RETURNING job_id
    """
    values = {
        **params,
        "to": to_job_id,
        "moved": ItemState.MOVED.value,
        "pending": ItemState.PENDING.value,
        "shadow": shadow,
        "now": now,
    }
    if is_postgres(session):
        # A data-modifying CTE: Postgres counts the moved rows per job itself.
        rows = session.execute(
            sa.text(f"WITH taken AS ({taken}) SELECT job_id, count(*) FROM taken GROUP BY 1"),
            values,
        )
        moved = Counter({int(job_id): int(n) for job_id, n in rows})
    else:  # SQLite has no INSERT in a CTE; embedded jobs are small
        moved = Counter(int(job_id) for (job_id,) in session.execute(sa.text(taken), values))
    _count_moved(session=session, moved=moved, now=now)
    return dict(moved)


def _count_moved(*, session: Session, moved: Counter[int], now: datetime) -> None:
    # Close each job whose items are now all accounted for (done + failed + moved).
    for job_id, n in sorted(moved.items()):
        complete = Job.done + Job.failed + Job.moved + n >= Job.total
        session.execute(
            sa.update(Job)
            .where(Job.id == job_id)
            .values(
                moved=Job.moved + n,
                updated_at=now,
                status=sa.case((complete, JobStatus.FINISHED.value), else_=Job.status),
                finished_at=sa.case((complete, sa.func.coalesce(Job.finished_at, now)), else_=None),
            )
        )
