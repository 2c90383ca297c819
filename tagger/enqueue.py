"""Queueing work: `tagger import` and `tagger retag` write the items and the job to
Postgres, commit, then publish the batches to Redis; `tagger jobs resume` publishes a
saved job's pending items again (after Redis was down, or when a job stalled)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import click
import sqlalchemy as sa
from celery import Celery
from rich.progress import Progress

from tagger.batching import chunked
from tagger.celery_app import TAG_BATCH, create_app
from tagger.db import Job, utcnow
from tagger.exceptions import TaggerError
from tagger.importer import import_items
from tagger.jobs import ACTIVE_STATUSES, get_job, pending_item_ids
from tagger.settings import Settings
from tagger.sources import load_items
from tagger.sweep import plan_sweep

log = logging.getLogger(__name__)


class PublishError(TaggerError):
    """The broker failed part-way. The job and its items are committed and still pending in
    the job's ledger, so nothing is lost: `tagger jobs resume JOB` queues them again."""

    def __init__(self, *, job_id: int, sent: int, batches: int, items: int, cause: BaseException):
        self.job_id = job_id
        self.sent = sent
        self.batches = batches
        self.items = items
        # `tagger retag` would not do: the items are pending in a live job, so a sweep leaves
        # them alone until the job counts as stalled (hours later).
        partly = f" ({sent} of {batches} batches were queued)" if sent else ""
        self.next_step = (
            f"job {job_id} is saved with {items} item{'s' if items != 1 else ''} pending{partly}; "
            f"run `tagger jobs resume {job_id}` once Redis is back"
        )
        super().__init__(
            f"job {job_id}: queued {sent} of {batches} batches, then the broker failed "
            f"({type(cause).__name__}: {cause}); {self.next_step}"
        )


@dataclass(frozen=True)
class Resumed:
    job_id: int
    status: str  # the job's status; nothing is queued unless it is queued/running
    items: int  # pending items queued again
    batches: int


def publish_batches(
    app: Celery, settings: Settings, job_id: int, batches: list[list[str]], *, progress: bool
) -> int:
    """Send one ``tag_batch`` message per batch; returns how many were sent."""
    sent = 0
    try:
        with Progress(transient=True, disable=not progress) as bar, app.producer_or_acquire() as pr:
            task = bar.add_task(f"queueing job {job_id}", total=len(batches))
            for batch in batches:
                app.send_task(TAG_BATCH, args=[job_id, batch], queue=settings.queue, producer=pr)
                sent += 1
                bar.advance(task)
    except Exception as exc:
        raise PublishError(
            job_id=job_id,
            sent=sent,
            batches=len(batches),
            items=sum(len(b) for b in batches),
            cause=exc,
        ) from exc
    log.info("job %s: queued %d batches on %r", job_id, sent, settings.queue)
    return sent


def resume_job(
    app: Celery, settings: Settings, sessions, *, job_id: int, progress: bool = False
) -> Resumed:
    """Publish the job's still-pending items again now, in batches of the job's batch size.

    Items whose first message is still queued (or running) are sent twice; that is
    harmless: ``tag_batch`` is idempotent (tags are upserted) and the ledger counts each
    item once. A finished job queues nothing. UnknownJob for an unknown id.
    """
    with sessions() as session:
        job = get_job(session=session, job_id=job_id)
        if job.status not in ACTIVE_STATUSES:
            return Resumed(job_id=job_id, status=job.status, items=0, batches=0)
        pending = pending_item_ids(session=session, job_id=job_id)
        batch_size, status = job.batch_size, job.status
    batches = list(chunked(pending, batch_size))
    if batches:
        publish_batches(app, settings, job_id, batches, progress=progress)
        # Counts as a sign of life only once the batches are out: a stalled job now reads
        # as queued/running again (so `jobs watch` does not stop at once, and a sweep leaves
        # these items to it) until stall_after passes without progress.
        with sessions.begin() as session:
            session.execute(
                sa.update(Job)
                .where(Job.id == job_id, Job.status.in_(ACTIVE_STATUSES))
                .values(updated_at=utcnow())
            )
    return Resumed(job_id=job_id, status=status, items=len(pending), batches=len(batches))


def import_and_queue(
    settings: Settings,
    sessions,
    *,
    file: Path | None,
    s3_prefix: str | None,
    batch_size: int,
) -> int:
    """Import a catalogue and queue its batches; returns the job id."""
    items, source = load_items(settings, file=file, s3_prefix=s3_prefix)
    # Commit before publishing: a worker may pick a batch up at once and must find the job.
    with sessions.begin() as session:
        plan = import_items(session=session, items=items, source=source, batch_size=batch_size)
        job_id = plan.job.id
    # Publish before the summary: if Redis is down, the one error line (with the job id
    # and how to resume it) is all that is printed.
    if plan.batches:
        publish_batches(create_app(settings), settings, job_id, plan.batches, progress=True)
    click.echo(
        f"job {job_id}: {len(items)} items ({plan.new} new, {plan.changed} changed, "
        f"{plan.unchanged} unchanged); {plan.job.total} to tag in {len(plan.batches)} batches",
        err=True,
    )
    click.echo(str(job_id))
    return job_id


def sweep_and_queue(
    app: Celery,
    settings: Settings,
    sessions,
    *,
    stale: bool = True,
    failed: bool = True,
    all_: bool = False,
    limit: int | None = None,
    source: str = "sweep",
    progress: bool = False,
) -> int | None:
    """Run a re-tag sweep and queue its job; returns the job id, or None if nothing to do."""
    with sessions.begin() as session:
        plan = plan_sweep(
            session=session,
            settings=settings,
            stale=stale,
            failed=failed,
            all_=all_,
            limit=limit,
            source=source,
        )
        job_id = plan.job.id if plan.job else None
    if job_id is None:
        log.info("sweep (%s): nothing to re-tag", source)
        return None
    log.info(
        "sweep (%s): job %s with %d stale and %d failed items",
        source,
        job_id,
        plan.stale,
        plan.failed,
    )
    publish_batches(app, settings, job_id, plan.batches, progress=progress)
    return job_id
