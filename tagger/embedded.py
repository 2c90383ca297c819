"""`tagger run`: the embedded mode. Same import and batch code as the service, but on
SQLite (or any database) with local images, tagging in this process with no broker."""

from __future__ import annotations

from pathlib import Path

import click
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from tagger.db import upgrade
from tagger.importer import import_items
from tagger.output import TAG_COLUMNS, render
from tagger.pipeline import BatchTagger
from tagger.registry import register_artifact
from tagger.settings import Settings
from tagger.sources import load_items
from tagger.tags import TagQuery, query_tags


def run_embedded(
    settings: Settings,
    sessions,
    *,
    file: Path,
    model_uri: str | None,
    batch_size: int,
    fmt: str = "table",
) -> int:
    """Import ``file``, tag every batch in-process, print the job's tags; returns the job id."""
    upgrade(settings.database_url)  # idempotent; a fresh SQLite file gets its schema here
    items, source = load_items(settings, file=file)
    with sessions.begin() as session:
        if model_uri:
            register_artifact(
                session=session, settings=settings, uri=model_uri, version=None, activate=True
            )
        plan = import_items(
            session=session, items=items, source=source, batch_size=batch_size, kind="run"
        )
        job_id = plan.job.id
    tagger = BatchTagger(settings, sessions)
    failed: dict[str, str] = {}
    columns = (
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, transient=True) as progress:
        task = progress.add_task(f"tagging job {job_id}", total=plan.job.total)
        for batch in plan.batches:
            outcome = tagger.run(job_id, batch, final=True)
            failed.update({i: f"{e.reason}: {e}" for i, e in outcome.failed.items()})
            progress.advance(task, len(batch))
    with sessions() as session:
        rows = query_tags(session=session, query=TagQuery(item_ids=tuple(i.item_id for i in items)))
    render(
        rows,
        columns=[c for c in TAG_COLUMNS if c != "tagged_at"],
        fmt=fmt,
        title=f"{source}: tags",
    )
    click.echo(
        f"job {job_id}: {len(items)} items: {plan.job.total - len(failed)} tagged now, "
        f"{len(failed)} failed, {plan.job.skipped} already up to date",
        err=True,
    )
    for item_id, why in sorted(failed.items()):
        click.echo(f"  failed {item_id}: {why}", err=True)
    return job_id
