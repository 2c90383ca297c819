"""`tagger db`, `tagger model`, `tagger worker` and `tagger beat`: setting a deployment up
and running its processes."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import click

from tagger.cli.context import Context, pass_ctx
from tagger.output import format_option
from tagger.states import STALLED


# --- db ------------------------------------------------------------------------------
@click.group()
def db() -> None:
    """Database schema."""


@db.command("upgrade")
@click.option("--revision", default="head", show_default=True)
@pass_ctx
def db_upgrade(ctx: Context, revision: str) -> None:
    """Apply the Alembic migrations."""
    from tagger.db import upgrade

    upgrade(ctx.settings.database_url, revision)
    click.echo(f"database at {revision}", err=True)


# --- model ---------------------------------------------------------------------------
@click.group()
def model() -> None:
    """Model versions: register, compare, activate, list."""


force_option = click.option(
    "--force",
    is_flag=True,
    help="Activate even without a comparison against the active version, or when it is "
    "worse on human labels.",
)


@model.command("register")
@click.argument("uri")
@click.option("--version", "version", help="Version id (default: the artifact's content hash).")
@click.option("--activate", is_flag=True, help="Make it the active version (as `activate`).")
@force_option
@pass_ctx
def model_register(
    ctx: Context, uri: str, version: str | None, activate: bool, force: bool
) -> None:
    """Record the model artifact at URI (a folder or s3://bucket/prefix/) as a version.

    --activate follows `tagger model activate`'s rule: the first version, or the active
    one registered again, is activated at once; a later version needs a comparison
    (`tagger model compare`) or --force. Refused, the version stays registered."""
    from tagger.registry import register_artifact

    with ctx.sessions.begin() as session:
        mv = register_artifact(
            session=session, settings=ctx.settings, uri=uri, version=version, activate=False
        )
        name = mv.version
    if activate:
        _activate(ctx, name, force=force, registered=True)
    click.echo(f"{name}{' (active)' if activate else ''}")


@model.command("activate")
@click.argument("version")
@force_option
@pass_ctx
def model_activate(ctx: Context, version: str, force: bool) -> None:
    """Make VERSION the active model; workers switch between batches.

    Prints VERSION's latest comparison against the active version (`tagger model
    compare`) and refuses, without --force, when there is none or VERSION gets fewer
    labelled items right on a head. The first version, and a rollback to a version that
    was active before, need no comparison."""
    _activate(ctx, version, force=force)
    click.echo(f"{version} (active)")


def _activate(ctx: Context, version: str, *, force: bool, registered: bool = False) -> None:
    from tagger.compare import headline
    from tagger.registry import activate_model_version
    from tagger.shadow import ActivationRefused, check_activation

    def show(check) -> None:
        if check.comparison is not None:
            c = check.comparison
            when = f"{c.created_at:%Y-%m-%d %H:%M}"
            click.echo(f"comparison {c.id} ({when}): {headline(c.report)}", err=True)
        elif check.active not in (None, version) and not check.refused:
            click.echo(check.reason, err=True)  # a rollback

    with ctx.sessions.begin() as session:
        try:
            check = check_activation(session=session, version=version, force=force)
        except ActivationRefused as refused:
            show(refused.check)
            if registered:
                message = f"{version} is registered but not active: {refused}"
                raise ActivationRefused(message, check=refused.check) from None
            raise
        show(check)
        if check.forced:
            click.echo(f"activating {version} anyway (--force): {check.reason}", err=True)
        activate_model_version(session=session, version=version)


@model.command("compare")
@click.argument("candidate")
@click.option(
    "--sample",
    type=click.IntRange(1, 1_000_000),
    help="Random items the active version tagged (default 1,000); labelled items join too.",
)
@click.option(
    "--labelled",
    type=click.IntRange(0, 10_000_000),
    help="Labelled items that join, at most (a random sample; default 10,000).",
)
@click.option(
    "--job",
    "job_id",
    type=click.IntRange(1),
    help="Compare on the items of job ID instead; a shadow job of CANDIDATE (from "
    "--no-wait) is waited for and reported, not queued again.",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("."),
    show_default=True,
    help="Folder of the product-type confusion heat map (PNG).",
)
@click.option(
    "--wait/--no-wait",
    default=True,
    help="Wait for the workers to finish the job, then report (default); --no-wait prints "
    "the job id (report later with --job ID).",
)
@click.option(
    "--in-process", is_flag=True, help="Tag here instead of on the workers (always on SQLite)."
)
@click.option("--batch-size", type=click.IntRange(1, 4096), help="Items per batch.")
@click.option("--interval", type=click.FloatRange(0.1), default=1.0, help="Seconds per poll.")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table")
@pass_ctx
def model_compare(
    ctx: Context,
    candidate: str,
    sample: int | None,
    labelled: int | None,
    job_id: int | None,
    out: Path,
    wait: bool,
    in_process: bool,
    batch_size: int | None,
    interval: float,
    fmt: str,
) -> None:
    """Tag a sample with CANDIDATE, a registered version (active or not), as a shadow job
    whose tags are never shown; then compare them with the active version's: agreement per
    head and class, the product-type confusion (table and PNG heat map) and both versions'
    accuracy on labelled items. The report is kept for `tagger model activate`."""
    from tagger.output import progress_bar

    if sample is not None and job_id is not None:
        raise click.UsageError("give --sample or --job, not both")
    kwargs = dict(
        settings=ctx.settings,
        sessions=ctx.sessions,
        candidate=candidate,
        batch_size=batch_size or ctx.settings.batch_size,
        sample=sample,
        from_job=job_id,
        labelled=labelled,
    )
    # The embedded mode (SQLite) has no broker: the job is tagged here, as `tagger run` does.
    with progress_bar(counts=True) as on_progress:
        if in_process or ctx.settings.database_url.startswith("sqlite"):
            from tagger.embedded import compare_in_process

            plan = compare_in_process(**kwargs, on_batch=on_progress)
        else:
            from tagger.enqueue import compare_and_queue

            plan = compare_and_queue(app=ctx.app, **kwargs, on_sent=on_progress)
            if not wait:
                click.echo(
                    f"shadow job {plan.job_id}: {plan.items} items"
                    f"{'' if plan.reused else ' queued'}; "
                    f"`tagger model compare {candidate} --job {plan.job_id}` reports once "
                    "it has finished",
                    err=True,
                )
                click.echo(str(plan.job_id))
                return
            _wait_for(ctx, plan.job_id, interval=interval, on_progress=on_progress)
    _report(ctx, plan.job_id, out=out, fmt=fmt)


def _wait_for(ctx: Context, job_id: int, *, interval: float, on_progress) -> None:
    from tagger.progress import job_snapshot
    from tagger.shadow import ComparisonError

    while True:
        with ctx.sessions() as session:
            snap = job_snapshot(
                session=session, job_id=job_id, stall_after=ctx.settings.stall_after
            )
        on_progress(f"shadow job {job_id}", snap.done + snap.failed, snap.total)
        if not snap.active:
            break
        time.sleep(interval)
    if snap.stats.state == STALLED:
        raise ComparisonError(
            f"shadow job {job_id} stalled (no progress for TAGGER_STALL_AFTER): are workers "
            f"running? `tagger jobs resume {job_id}` queues it again"
        )


def _report(ctx: Context, job_id: int, *, out: Path, fmt: str) -> None:
    from tagger.compare import headline
    from tagger.heatmap import draw_confusion
    from tagger.shadow import compare_job, save_comparison

    with ctx.sessions.begin() as session:
        report = compare_job(session=session, job_id=job_id)
        saved = save_comparison(session=session, job_id=job_id, report=report)
        comparison_id = saved.id
    base, cand = report["baseline"], report["candidate"]
    product = report["confusion"]["product"]
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", f"compare-{cand}-vs-{base}")
    png = draw_confusion(
        out / f"{safe}.png",
        rows=product["rows"],
        columns=product["columns"],
        counts=product["counts"],
        title=f"Product type: {cand} (columns) against the active {base} (rows)",
        row_title=f"active {base}",
        column_title=f"candidate {cand}",
    )
    if fmt == "json":
        click.echo(json.dumps({"comparison": comparison_id, "heatmap": str(png), **report}))
    else:
        _tables(report)
    click.echo(f"comparison {comparison_id}: {headline(report)}", err=True)
    click.echo(f"heat map: {png}", err=True)


def _tables(report: dict) -> None:
    from tagger.compare import report_tables
    from tagger.output import render

    for title, columns, rows in report_tables(report):
        render(rows, columns=columns, title=title)


@model.command("list")
@format_option
@pass_ctx
def model_list(ctx: Context, fmt: str) -> None:
    """Registered versions with their metrics and tagged item counts."""
    from tagger.output import model_rows, render
    from tagger.registry import list_model_versions

    with ctx.sessions() as session:
        rows = model_rows(list_model_versions(session=session))
    render(rows, columns=list(rows[0]) if rows else ["version"], fmt=fmt)


@click.command("worker", context_settings={"ignore_unknown_options": True})
@click.argument("celery_args", nargs=-1, type=click.UNPROCESSED)
@pass_ctx
def worker(ctx: Context, celery_args: tuple[str, ...]) -> None:
    """Run a Celery worker (extra options go to `celery worker`). It serves Prometheus
    metrics on TAGGER_METRICS_PORT (0: none); `tagger stats` sums them up."""
    from tagger.celery_app import create_app
    from tagger.runtime import worker_processes

    s = ctx.settings
    app = create_app(s)
    args = [
        "worker",
        "--loglevel",
        s.log_level,
        "-Q",
        s.queue,
        "--concurrency",
        str(worker_processes(s)),
        *celery_args,
    ]
    app.worker_main(args)


@click.command("beat", context_settings={"ignore_unknown_options": True})
@click.argument("celery_args", nargs=-1, type=click.UNPROCESSED)
@pass_ctx
def beat(ctx: Context, celery_args: tuple[str, ...]) -> None:
    """Run the Celery beat scheduler (run exactly one per deployment)."""
    from tagger.celery_app import create_app

    app = create_app(ctx.settings)
    app.start(["beat", "--loglevel", ctx.settings.log_level, *celery_args])
