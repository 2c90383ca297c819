"""Queueing work: `tagger import` and `tagger retag` write the items and the job to
Postgres, commit, then publish the batches to Redis."""

from __future__ import annotations

import logging
from pathlib import Path

import click
from celery import Celery
from rich.progress import Progress

from tagger.celery_app import TAG_BATCH, create_app
from tagger.exceptions import TaggerError
from tagger.importer import import_items
from tagger.settings import Settings
from tagger.sources import load_items
from tagger.sweep import plan_sweep

log = logging.getLogger(__name__)


class PublishError(TaggerError):
    """The broker failed part-way; the job's unpublished items are still pending."""


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
        # The items are in Postgres and still pending in the job's ledger: nothing is lost,
        # and the next sweep (or the same import again) queues exactly what is left.
        raise PublishError(
            f"job {job_id}: queued {sent} of {len(batches)} batches, then the broker failed "
            f"({type(exc).__name__}: {exc}); run `tagger retag` once it is back"
        ) from exc
    log.info("job %s: queued %d batches on %r", job_id, sent, settings.queue)
    return sent


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
    click.echo(
        f"job {job_id}: {len(items)} items ({plan.new} new, {plan.changed} changed, "
        f"{plan.unchanged} unchanged); {plan.job.total} to tag in {len(plan.batches)} batches",
        err=True,
    )
    if plan.batches:
        publish_batches(create_app(settings), settings, job_id, plan.batches, progress=True)
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
