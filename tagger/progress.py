"""Job progress as people read it: throughput, ETA, stalled jobs, a live progress bar."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import click
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from sqlalchemy.orm import Session, sessionmaker

from tagger.db import Job, utcnow
from tagger.jobs import ACTIVE_STATUSES, delivery_counts, failure_counts, get_job, list_jobs


def _aware(ts: datetime | None) -> datetime | None:
    # SQLite hands back naive datetimes; every timestamp tagger writes is UTC.
    if ts is not None and ts.tzinfo is None:
        return ts.replace(tzinfo=timezone.utc)
    return ts


@dataclass(frozen=True)
class JobStats:
    state: str  # the stored status, or "stalled" for an active job with no recent progress
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
        state = "stalled"
    rate = eta = None
    started = _aware(job.started_at)
    if started is not None and processed:
        end = _aware(job.finished_at) or updated
        elapsed = max((end - started).total_seconds(), 1e-3)
        rate = processed / elapsed
        eta = remaining / rate if state != "finished" else 0.0
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
            "eta": _duration(stats.eta_s) if stats.state in ("queued", "running") else "",
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


def watch_job(
    sessions: sessionmaker[Session], job_id: int, *, stall_after: int, interval: float = 1.0
) -> JobStats:
    """Show a live progress bar until the job finishes or stalls, then a summary."""
    columns = (
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeRemainingColumn(),
    )
    with sessions() as session:
        job = get_job(session=session, job_id=job_id)
    with Progress(*columns) as bar:
        task = bar.add_task(f"job {job_id}", total=job.total, rate="")
        while True:
            with sessions() as session:
                job = get_job(session=session, job_id=job_id)
                stats = job_stats(job, now=utcnow(), stall_after=stall_after)
            rate = f"{stats.rate:.1f} items/s" if stats.rate else ""
            bar.update(
                task,
                completed=stats.processed,
                rate=rate,
                description=f"job {job_id} {stats.state}",
            )
            if stats.state not in ("queued", "running"):
                break
            time.sleep(interval)
    with sessions() as session:
        reasons = failure_counts(session=session, job_id=job_id)
    click.echo(
        f"job {job_id} {stats.state}: {job.done} tagged, {job.failed} failed, "
        f"{job.skipped} skipped"
        + (f", {job.moved} moved to a newer job" if job.moved else "")
        + f" of {job.total + job.skipped}"
        + (f" ({stats.rate:.1f} items/s)" if stats.rate else "")
    )
    for reason, n in reasons.items():
        click.echo(f"  {reason}: {n}")
    return stats
