"""`tagger db`, `tagger model`, `tagger worker` and `tagger beat`: setting a deployment up
and running its processes."""

from __future__ import annotations

import click

from tagger.cli.context import Context, pass_ctx
from tagger.output import format_option


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
    """Model versions: register, activate, list."""


@model.command("register")
@click.argument("uri")
@click.option("--version", "version", help="Version id (default: the artifact's content hash).")
@click.option("--activate", is_flag=True, help="Make it the active version.")
@pass_ctx
def model_register(ctx: Context, uri: str, version: str | None, activate: bool) -> None:
    """Record the model artifact at URI (a folder or s3://bucket/prefix/) as a version."""
    from tagger.registry import register_artifact

    with ctx.sessions.begin() as session:
        mv = register_artifact(
            session=session, settings=ctx.settings, uri=uri, version=version, activate=activate
        )
        click.echo(f"{mv.version}{' (active)' if mv.is_active else ''}")


@model.command("activate")
@click.argument("version")
@pass_ctx
def model_activate(ctx: Context, version: str) -> None:
    """Make VERSION the active model; workers switch between batches."""
    from tagger.registry import activate_model_version

    with ctx.sessions.begin() as session:
        activate_model_version(session=session, version=version)
    click.echo(f"{version} (active)")


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
