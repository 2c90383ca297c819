"""`tagger import`: write the items and the job to Postgres, then queue the batches."""

from __future__ import annotations

import logging
from pathlib import Path

import click
from rich.progress import Progress

from tagger.celery_app import TAG_BATCH, create_app
from tagger.importer import import_items
from tagger.settings import Settings
from tagger.sources import load_items

log = logging.getLogger(__name__)


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
    if not plan.batches:
        return job_id
    app = create_app(settings)
    sent = 0
    try:
        with Progress(transient=True) as progress, app.producer_or_acquire() as producer:
            task = progress.add_task("queueing batches", total=len(plan.batches))
            for batch in plan.batches:
                app.send_task(
                    TAG_BATCH, args=[job_id, batch], queue=settings.queue, producer=producer
                )
                sent += 1
                progress.advance(task)
    except Exception as exc:
        # The items are in Postgres and still pending in the job's ledger: nothing is lost,
        # and importing again queues exactly what is still untagged.
        raise click.ClickException(
            f"job {job_id}: queued {sent} of {len(plan.batches)} batches, then the broker "
            f"failed ({type(exc).__name__}: {exc}); import the same file again to queue the rest"
        ) from exc
    click.echo(f"job {job_id}: queued {sent} batches on {settings.queue!r}", err=True)
    click.echo(str(job_id))
    return job_id
