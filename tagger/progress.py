"""Job progress as people read it: throughput, ETA, stalled jobs, and one poll of a job
for `tagger jobs watch` (the CLI draws the bar; nothing here prints)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from sqlalchemy.orm import Session

from tagger.db import Job, utcnow
from tagger.deliveries import delivery_counts
from tagger.jobs import failure_counts, get_job, list_jobs
from tagger.states import ACTIVE_STATUSES, STALLED, JobStatus

# How a long step (publishing batches, tagging in-process) reports progress to whoever
# draws it: (description, completed, total). Steps call it once with 0 before they start,
# because the description and the total (a job id, a batch count) are only known inside.
OnProgress = Callable[[str, int, int], None]


def _aware(ts: datetime | None) -> datetime | None:
    # SQLite hands back naive datetimes; every timestamp tagger writes is UTC.
    if ts is not None and ts.tzinfo is None:
        return ts.replace(tzinfo=timezone.utc)
    return ts


@dataclass(frozen=True)
class JobStats:
    state: str  # the stored status (a JobStatus word), or STALLED: active, no recent progress
    processed: int
    remaining: int
    rate: float | None  # items per second since the first batch finished
    eta_s: float | None


def job_stats(job: Job, *, now: datetime, stall_after: int) -> JobStats:
    processed = job.done + job.failed
    remaining = max(0, job.total - processed - (job.moved or 0))
    state = job.status
    updated = _aware(job.updated_at)
    if state in ACTIVE_STATUSES and updated < now - timedelta(seconds=stall_after):
        state = STALLED
    rate = eta = None
    started = _aware(job.started_at)
    if started is not None and processed:
        end = _aware(job.finished_at) or updated
        elapsed = max((end - started).total_seconds(), 1e-3)
        rate = processed / elapsed
        eta = remaining / rate if state != JobStatus.FINISHED else 0.0
    return JobStats(state=state, processed=processed, remaining=remaining, rate=rate, eta_s=eta)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    return str(timedelta(seconds=round(seconds)))


def describe_jobs(*, session: Session, stall_after: int, job_id: int | None = None) -> list[dict]:
    """Rows for `tagger jobs`: one job with failures by reason, or the latest jobs."""
    jobs = (
        [get_job(session=session, job_id=job_id)]
        if job_id is not None
        else list_jobs(session=session)
    )
    now = utcnow()
    rows = []
    for job in jobs:
        stats = job_stats(job, now=now, stall_after=stall_after)
        row = {
            "id": job.id,
            "kind": job.kind,
            "status": stats.state,
            "total": job.total,
            "done": job.done,
            "failed": job.failed,
            "skipped": job.skipped,
            "moved": job.moved,
            "rate/s": None if stats.rate is None else round(stats.rate, 2),
            "eta": _duration(stats.eta_s) if stats.state in ACTIVE_STATUSES else "",
            "source": job.source,
            "created_at": job.created_at,
        }
        if job_id is not None:
            counts = failure_counts(session=session, job_id=job.id)
            row["failures"] = ", ".join(f"{r}={n}" for r, n in counts.items())
            deliveries = delivery_counts(session=session, job_id=job.id)
            row["redelivered"] = deliveries["redelivered_items"]
            row["died"] = deliveries["died_items"]
            row["finished_at"] = job.finished_at
        rows.append(row)
    return rows


@dataclass(frozen=True)
class JobSnapshot:
    """One poll of a job: its counters and what they mean now."""

    job_id: int
    total: int
    done: int
    failed: int
    skipped: int
    moved: int
    stats: JobStats

    @property
    def active(self) -> bool:
        """Still queued or running (not finished, not stalled): worth polling again."""
        return self.stats.state in ACTIVE_STATUSES


def job_snapshot(
    *, session: Session, job_id: int, stall_after: int, now: datetime | None = None
) -> JobSnapshot:
    """The job's counters and stats as of ``now``; UnknownJob for an unknown id."""
    job = get_job(session=session, job_id=job_id)
    stats = job_stats(job, now=now or utcnow(), stall_after=stall_after)
    return JobSnapshot(
        job_id=job.id,
        total=job.total,
        done=job.done,
        failed=job.failed,
        skipped=job.skipped,
        moved=job.moved or 0,
        stats=stats,
    )
