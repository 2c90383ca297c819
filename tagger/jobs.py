"""Jobs and their ledger of items. Counters move only when an item's state changes, with
atomic increments, so at-least-once delivery and concurrent workers never miscount."""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.orm import Session

from tagger.batching import chunked
from tagger.db import Failure, Job, JobItem, insert, utcnow
from tagger.exceptions import UnknownJob

ACTIVE_STATUSES = ("queued", "running")
# Keep IN (...) lists and multi-row inserts well under driver parameter limits.
CHUNK = 500


def create_job(
    *,
    session: Session,
    kind: str,
    source: str | None,
    item_ids: Sequence[str],
    batch_size: int,
    skipped: int = 0,
) -> Job:
    """A job over ``item_ids`` (each once), all pending; finished at once when empty."""
    now = utcnow()
    job = Job(
        kind=kind,
        source=source,
        status="queued" if item_ids else "finished",
        total=len(item_ids),
        skipped=skipped,
        batch_size=batch_size,
        created_at=now,
        updated_at=now,
        finished_at=None if item_ids else now,
    )
    session.add(job)
    session.flush()
    for chunk in chunked(list(item_ids), CHUNK):
        session.execute(
            insert(session, JobItem),
            [
                {"job_id": job.id, "item_id": i, "state": "pending", "updated_at": now}
                for i in chunk
            ],
        )
    return job


def get_job(*, session: Session, job_id: int) -> Job:
    job = session.get(Job, job_id)
    if job is None:
        raise UnknownJob(f"no job with id {job_id}")
    return job


def list_jobs(*, session: Session, limit: int = 20) -> list[Job]:
    return list(session.scalars(sa.select(Job).order_by(Job.id.desc()).limit(limit)))


def pending_item_ids(*, session: Session, job_id: int) -> list[str]:
    return list(
        session.scalars(
            sa.select(JobItem.item_id)
            .where(JobItem.job_id == job_id, JobItem.state == "pending")
            .order_by(JobItem.item_id)
        )
    )


def failure_counts(*, session: Session, job_id: int) -> dict[str, int]:
    """Failures by reason for the items of a job."""
    rows = session.execute(
        sa.select(Failure.reason, sa.func.count())
        .join(JobItem, JobItem.item_id == Failure.item_id)
        .where(JobItem.job_id == job_id, JobItem.state == "failed")
        .group_by(Failure.reason)
        .order_by(Failure.reason)
    ).all()
    return {reason: int(n) for reason, n in rows}


def mark_started(*, session: Session, job_id: int) -> None:
    """A worker took up a batch of the job: set started_at once, queued → running."""
    now = utcnow()
    session.execute(
        sa.update(Job)
        .where(Job.id == job_id, Job.started_at.is_(None))
        .values(
            started_at=now,
            updated_at=now,
            status=sa.case((Job.status == "queued", "running"), else_=Job.status),
        )
    )


def record_outcomes(
    *, session: Session, job_id: int, tagged: Sequence[str], failed: Sequence[str]
) -> None:
    """Move the job's items to tagged/failed and bump the counters by what actually moved.

    A re-delivered batch finds its items already moved (rowcount 0) and counts nothing; a
    concurrent duplicate blocks on the same rows and then finds them moved too.
    """
    now = utcnow()

    def move(ids: Sequence[str], to: str, frm: str) -> int:
        moved = 0
        for chunk in chunked(sorted(ids), CHUNK):
            result = session.execute(
                sa.update(JobItem)
                .where(
                    JobItem.job_id == job_id,
                    JobItem.item_id.in_(chunk),
                    JobItem.state == frm,
                )
                .values(state=to, updated_at=now)
            )
            moved += result.rowcount
        return moved

    tagged_new = move(tagged, "tagged", "pending")
    tagged_after_failure = move(tagged, "tagged", "failed")
    failed_new = move(failed, "failed", "pending")
    done_delta = tagged_new + tagged_after_failure
    failed_delta = failed_new - tagged_after_failure
    complete = Job.done + done_delta + Job.failed + failed_delta >= Job.total
    session.execute(
        sa.update(Job)
        .where(Job.id == job_id)
        .values(
            done=Job.done + done_delta,
            failed=Job.failed + failed_delta,
            updated_at=now,
            started_at=sa.func.coalesce(Job.started_at, now),
            status=sa.case((complete, "finished"), else_="running"),
            finished_at=sa.case((complete, sa.func.coalesce(Job.finished_at, now)), else_=None),
        )
    )
