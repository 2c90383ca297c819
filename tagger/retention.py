"""Ledger retention: a finished job's ledger (its ``job_items`` rows and its batches) is
deleted once the job is older than ``TAGGER_LEDGER_RETENTION_DAYS``, since nightly sweeps
over a large catalogue add a row per delivered item per night. The ``jobs`` row keeps its
counters and the ``failures`` rows stay: only the per-item history of old, finished jobs
goes.

The rows go in bounded chunks, each its own transaction, so a prune of millions of rows
never holds one giant transaction or its locks, and a prune cut off part-way (a time
limit, a crash) keeps what it did; the next one carries on. A finished job with a
``total`` but no batches left is a pruned one (tagger never deletes items, whose
rows would otherwise go by cascade): `tagger jobs ID` says so, `tagger tags --job ID`
refuses it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from tagger.db import Job, JobBatch, JobItem, utcnow
from tagger.exceptions import TaggerError
from tagger.ledger import has_members
from tagger.states import FINISHED_STATUSES

log = logging.getLogger(__name__)

#: Ledger rows deleted per transaction: small enough to keep each one short.
PRUNE_CHUNK = 10_000


class LedgerPruned(TaggerError):
    """The job's per-item ledger was pruned: which items it covered is no longer known."""


@dataclass(frozen=True)
class PruneOutcome:
    older_than_days: int
    jobs: int  # finished jobs whose ledger was (or, dry run, would be) deleted
    rows: int  # job_items rows deleted (or that would be)
    dry_run: bool = False


def prune_cutoff(*, older_than_days: int, now: datetime | None = None) -> datetime:
    return (now or utcnow()) - timedelta(days=older_than_days)


def prunable_jobs(*, session: Session, before: datetime) -> list[int]:
    """Finished jobs that finished before ``before`` and still have ledger rows."""
    return list(
        session.scalars(
            sa.select(Job.id)
            .where(
                Job.status.in_(FINISHED_STATUSES),
                Job.finished_at < before,
                sa.or_(
                    sa.exists().where(JobItem.job_id == Job.id),
                    sa.exists().where(JobBatch.job_id == Job.id),
                ),
            )
            .order_by(Job.id)
        )
    )


def ledger_rows(*, session: Session, job_id: int) -> int:
    return session.scalar(
        sa.select(sa.func.count()).select_from(JobItem).where(JobItem.job_id == job_id)
    )


def delete_ledger_chunk(
    *, session: Session, job_id: int, after: str | None, chunk: int = PRUNE_CHUNK
) -> tuple[int, str | None]:
    """Delete the job's next ``chunk`` ledger rows in item-id order after ``after``;
    returns (rows deleted, the last item id deleted, None once nothing is left).

    A keyset range on the primary key (job_id, item_id): each chunk is an index range
    scan, never a re-scan over the dead rows of the chunks before it."""
    rows = sa.select(JobItem.item_id).where(JobItem.job_id == job_id).order_by(JobItem.item_id)
    if after is not None:
        rows = rows.where(JobItem.item_id > after)
    last = session.scalar(rows.offset(chunk - 1).limit(1))
    delete = sa.delete(JobItem).where(JobItem.job_id == job_id)
    if after is not None:
        delete = delete.where(JobItem.item_id > after)
    if last is not None:
        delete = delete.where(JobItem.item_id <= last)
    return session.execute(delete).rowcount, last


def prune_job_ledger(
    *, sessions: sessionmaker[Session], job_id: int, chunk: int = PRUNE_CHUNK
) -> int:
    """Delete every ledger row of one job, a chunk per transaction, then its batches (a
    row per batch: few); returns the job_items rows deleted."""
    deleted, after = 0, None
    while True:
        with sessions.begin() as session:
            n, after = delete_ledger_chunk(session=session, job_id=job_id, after=after, chunk=chunk)
        deleted += n
        if after is None:  # the chunk was the job's last (possibly short, possibly empty)
            break
    with sessions.begin() as session:
        session.execute(sa.delete(JobBatch).where(JobBatch.job_id == job_id))
    return deleted


def prune_ledgers(
    *,
    sessions: sessionmaker[Session],
    older_than_days: int,
    dry_run: bool = False,
    chunk: int = PRUNE_CHUNK,
    now: datetime | None = None,
) -> PruneOutcome:
    """Delete the ledger rows of every finished job older than ``older_than_days``
    (``dry_run``: count them only). Safe to run twice, or beside another prune."""
    if older_than_days < 1:
        raise ValueError(f"older_than_days must be at least 1, got {older_than_days}")
    before = prune_cutoff(older_than_days=older_than_days, now=now)
    with sessions() as session:
        job_ids = prunable_jobs(session=session, before=before)
        if dry_run:
            rows = sum(ledger_rows(session=session, job_id=j) for j in job_ids)
            return PruneOutcome(older_than_days, jobs=len(job_ids), rows=rows, dry_run=True)
    rows = 0
    for job_id in job_ids:
        n = prune_job_ledger(sessions=sessions, job_id=job_id, chunk=chunk)
        log.info("job %s: pruned %d ledger rows", job_id, n)
        rows += n
    return PruneOutcome(older_than_days, jobs=len(job_ids), rows=rows)


def ledger_pruned(*, session: Session, job: Job) -> bool:
    """Whether the job's per-item ledger was pruned (finished, had items, has no rows)."""
    if job.status not in FINISHED_STATUSES or not job.total:
        return False
    return not has_members(session=session, job_id=job.id)


def ensure_ledger_kept(*, session: Session, job: Job) -> None:
    """LedgerPruned when the job's per-item ledger is gone (its item list is unknown)."""
    if ledger_pruned(session=session, job=job):
        raise LedgerPruned(
            f"job {job.id}: its per-item ledger was pruned (finished {job.finished_at:%Y-%m-%d}, "
            "older than TAGGER_LEDGER_RETENTION_DAYS), so which items it tagged is no longer "
            f"known; its counters remain in `tagger jobs {job.id}`"
        )
