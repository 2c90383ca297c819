"""`tagger import`, `tagger run` and `tagger retag`: putting work on the queue (or, in
the embedded mode, doing it here)."""

from __future__ import annotations

from pathlib import Path

import click

from tagger.cli.context import Context, pass_ctx
from tagger.output import format_option


@click.command("import")
@click.argument("file", required=False, type=click.Path(path_type=Path))
@click.option("--s3-prefix", help="Import every image under s3://bucket/prefix/.")
@click.option("--batch-size", type=click.IntRange(1, 4096), help="Items per task.")
@pass_ctx
def import_(ctx: Context, file: Path | None, s3_prefix: str | None, batch_size: int | None) -> None:
    """Upsert a catalogue (CSV / JSON Lines / image folder) and queue its batches."""
    from tagger.enqueue import import_and_queue
    from tagger.output import import_summary, progress_bar

    if (file is None) == (s3_prefix is None):
        raise click.UsageError("give either FILE or --s3-prefix")
    # Publish before the summary: if Redis is down, the one error line (with the job id
    # and how to resume it) is all that is printed.
    with progress_bar() as on_sent:
        outcome = import_and_queue(
            app=ctx.app,
            settings=ctx.settings,
            sessions=ctx.sessions,
            file=file,
            s3_prefix=s3_prefix,
            batch_size=batch_size or ctx.settings.batch_size,
            on_sent=on_sent,
        )
    click.echo(import_summary(outcome), err=True)
    click.echo(str(outcome.job_id))


@click.command("run")
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--model", "model_uri", help="Register and activate this artifact first.")
@click.option(
    "--force",
    is_flag=True,
    help="Activate --model even without a comparison against the active version "
    "(`tagger model compare`), or when it is worse on human labels.",
)
@click.option("--batch-size", type=click.IntRange(1, 4096), help="Items per model call.")
@format_option
@pass_ctx
def run_file(
    ctx: Context,
    file: Path,
    model_uri: str | None,
    force: bool,
    batch_size: int | None,
    fmt: str,
) -> None:
    """Embedded mode: import FILE and tag it in this process (no broker), then print tags."""
    from tagger.embedded import run_embedded
    from tagger.output import TAG_COLUMNS, progress_bar, render, run_summary

    with progress_bar(counts=True) as on_batch:
        outcome = run_embedded(
            settings=ctx.settings,
            sessions=ctx.sessions,
            file=file,
            model_uri=model_uri,
            batch_size=batch_size or ctx.settings.batch_size,
            on_batch=on_batch,
            force=force,
        )
    columns = [c for c in TAG_COLUMNS if c != "tagged_at"]
    render(outcome.rows, columns=columns, fmt=fmt, title=f"{outcome.source}: tags")
    for line in run_summary(outcome):
        click.echo(line, err=True)


@click.command("retag")
@click.option(
    "--stale", is_flag=True, help="Items without a tag from the active model, or changed."
)
@click.option("--failed", is_flag=True, help="Failed items due a retry.")
@click.option("--all", "all_", is_flag=True, help="Every item.")
@click.option("--limit", type=click.IntRange(1), help="Most items to queue (default: setting).")
@pass_ctx
def retag(ctx: Context, stale: bool, failed: bool, all_: bool, limit: int | None) -> None:
    """Queue a re-tag job now: the nightly sweep by hand (default: --stale --failed)."""
    from tagger.enqueue import sweep_and_queue
    from tagger.output import progress_bar

    if not (stale or failed or all_):
        stale = failed = True
    with progress_bar() as on_sent:
        job_id = sweep_and_queue(
            app=ctx.app,
            settings=ctx.settings,
            sessions=ctx.sessions,
            stale=stale,
            failed=failed,
            all_=all_,
            limit=limit,
            source="retag",
            on_sent=on_sent,
        )
    if job_id is None:
        click.echo("nothing to re-tag", err=True)
    else:
        click.echo(str(job_id))
