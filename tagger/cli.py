"""The `tagger` command. Each command builds its own settings, engine and clients, hands
them to a use case (tagger.enqueue, tagger.embedded, ...) and shows what it returns: only
this module and tagger.output print, draw progress and choose exit codes."""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

import click

from tagger.exceptions import TaggerError
from tagger.output import format_option
from tagger.settings import Settings, load_settings

if TYPE_CHECKING:
    from celery import Celery
    from sqlalchemy.orm import Session, sessionmaker


class Context:
    """Lazily built per-command resources (nothing is connected until a command needs it)."""

    def __init__(self) -> None:
        self._settings: Settings | None = None
        self._sessions: sessionmaker[Session] | None = None
        self._app: Celery | None = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = load_settings()
        return self._settings

    @property
    def sessions(self) -> sessionmaker[Session]:
        if self._sessions is None:
            from tagger.db import make_engine, make_session_factory

            engine = make_engine(self.settings.database_url)
            # Closed with the command: `run` may serve many commands in one process (tests).
            click.get_current_context().call_on_close(engine.dispose)
            self._sessions = make_session_factory(engine)
        return self._sessions

    @property
    def app(self) -> Celery:
        """The Celery app, for publishing (made without connecting to the broker)."""
        if self._app is None:
            from tagger.celery_app import create_app

            self._app = create_app(self.settings)
            click.get_current_context().call_on_close(self._app.close)
        return self._app


pass_ctx = click.make_pass_decorator(Context, ensure=True)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="tagger")
def cli() -> None:
    """Batch auto-tagging of fashion catalogue images (gender + product type)."""


# --- db ------------------------------------------------------------------------------
@cli.group()
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
@cli.group()
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


# --- import / run / worker -----------------------------------------------------------
@cli.command("import")
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


@cli.command("run")
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--model", "model_uri", help="Register and activate this artifact first.")
@click.option("--batch-size", type=click.IntRange(1, 4096), help="Items per model call.")
@format_option
@pass_ctx
def run_file(
    ctx: Context, file: Path, model_uri: str | None, batch_size: int | None, fmt: str
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
        )
    columns = [c for c in TAG_COLUMNS if c != "tagged_at"]
    render(outcome.rows, columns=columns, fmt=fmt, title=f"{outcome.source}: tags")
    for line in run_summary(outcome):
        click.echo(line, err=True)


@cli.command("worker", context_settings={"ignore_unknown_options": True})
@click.argument("celery_args", nargs=-1, type=click.UNPROCESSED)
@pass_ctx
def worker(ctx: Context, celery_args: tuple[str, ...]) -> None:
    """Run a Celery worker (extra options go to `celery worker`)."""
    from tagger.celery_app import create_app

    s = ctx.settings
    app = create_app(s)
    args = [
        "worker",
        "--loglevel",
        s.log_level,
        "-Q",
        s.queue,
        "--concurrency",
        str(s.worker_concurrency),
        *celery_args,
    ]
    app.worker_main(args)


@cli.command("beat", context_settings={"ignore_unknown_options": True})
@click.argument("celery_args", nargs=-1, type=click.UNPROCESSED)
@pass_ctx
def beat(ctx: Context, celery_args: tuple[str, ...]) -> None:
    """Run the Celery beat scheduler (run exactly one per deployment)."""
    from tagger.celery_app import create_app

    app = create_app(ctx.settings)
    app.start(["beat", "--loglevel", ctx.settings.log_level, *celery_args])


# --- tags / jobs / retag -------------------------------------------------------------


@cli.group("tags", invoke_without_command=True)
@click.option("--gender")
@click.option("--product-type")
@click.option("--min-score", type=click.FloatRange(0, 1))
@click.option("--item", "item_id")
@click.option("--job", "job_id", type=int)
@click.option("--model-version", help="That version's tags instead of the current ones.")
@click.option("--since", type=click.DateTime(["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S"]), help="UTC.")
@click.option("--limit", type=click.IntRange(1))
@format_option
@click.pass_context
def tags(click_ctx: click.Context, fmt: str, **filters) -> None:
    """Current tags per item (the current_tags view), filtered. `tags prune` drops old ones."""
    if click_ctx.invoked_subcommand is not None:
        return
    from tagger.jobs import get_job
    from tagger.output import TAG_COLUMNS, render
    from tagger.registry import get_model_version
    from tagger.tags import TagQuery, query_tags

    ctx = click_ctx.ensure_object(Context)
    since: datetime | None = filters.pop("since")
    if since is not None:
        since = since.replace(tzinfo=timezone.utc)
    query = TagQuery(**filters, since=since)
    with ctx.sessions() as session:
        if query.job_id is not None:
            get_job(session=session, job_id=query.job_id)
        if query.model_version is not None:
            get_model_version(session=session, version=query.model_version)
        rows = query_tags(session=session, query=query)
    render(rows, columns=TAG_COLUMNS, fmt=fmt)


@tags.command("prune")
@click.option(
    "--keep",
    type=click.IntRange(1),
    required=True,
    help="Tags to keep per item (its current tag is always kept).",
)
@pass_ctx
def tags_prune(ctx: Context, keep: int) -> None:
    """Delete old tag rows: keep each item's KEEP most relevant tags."""
    from tagger.tags import prune_tags

    with ctx.sessions.begin() as session:
        deleted = prune_tags(session=session, keep=keep)
    click.echo(f"pruned {deleted} tag rows (kept {keep} per item)", err=True)


@cli.command("jobs")
@click.argument("args", nargs=-1)
@format_option
@click.option("--interval", type=click.FloatRange(0.1), default=1.0, help="Seconds, for watch.")
@click.pass_context
def jobs(click_ctx: click.Context, args: tuple[str, ...], fmt: str, interval: float) -> None:
    """`jobs` lists jobs, `jobs ID` shows one with failures by reason, `jobs watch ID`
    shows a live progress bar until the job ends, `jobs resume ID` queues the job's
    pending items again now (after Redis was down, or when the job stalled)."""
    from tagger.output import render
    from tagger.progress import describe_jobs
    from tagger.states import STALLED

    ctx = click_ctx.ensure_object(Context)
    if args and args[0] in ("watch", "resume"):
        if len(args) != 2 or not args[1].isdigit():
            raise click.UsageError(f"usage: tagger jobs {args[0]} ID")
        if args[0] == "resume":
            _resume(ctx, int(args[1]))
        elif _watch(ctx, int(args[1]), interval=interval) == STALLED:
            click_ctx.exit(3)
        return
    if len(args) > 1 or (args and not args[0].isdigit()):
        raise click.UsageError(
            "usage: tagger jobs [ID] | tagger jobs watch ID | tagger jobs resume ID"
        )
    job_id = int(args[0]) if args else None
    with ctx.sessions() as session:
        rows = describe_jobs(session=session, stall_after=ctx.settings.stall_after, job_id=job_id)
    render(rows, columns=list(rows[0]) if rows else ["id"], fmt=fmt)


def _watch(ctx: Context, job_id: int, *, interval: float) -> str:
    """`tagger jobs watch ID`: a live bar until the job ends, then a summary; returns the
    job's last state (stalled when it stopped making progress)."""
    from tagger.jobs import failure_counts
    from tagger.output import watch_bar, watch_summary
    from tagger.progress import JobSnapshot, job_snapshot

    def poll() -> JobSnapshot:
        with ctx.sessions() as session:
            return job_snapshot(
                session=session, job_id=job_id, stall_after=ctx.settings.stall_after
            )

    last = watch_bar(poll, poll(), interval=interval)  # UnknownJob before any bar is drawn
    with ctx.sessions() as session:
        reasons = failure_counts(session=session, job_id=job_id)
    for line in watch_summary(last, reasons):
        click.echo(line)
    return last.stats.state


def _resume(ctx: Context, job_id: int) -> None:
    """`tagger jobs resume ID`: the job's pending items, published again."""
    from tagger.enqueue import resume_job
    from tagger.output import progress_bar, resume_summary

    with progress_bar() as on_sent:
        done = resume_job(
            app=ctx.app,
            settings=ctx.settings,
            sessions=ctx.sessions,
            job_id=job_id,
            on_sent=on_sent,
        )
    click.echo(resume_summary(done), err=True)


@cli.command("retag")
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


def run(argv: Sequence[str]) -> int:
    """Run the `tagger` command with ``argv`` in this process: it prints what the command
    prints and returns its exit code. Bugs (not our errors, not an unreachable service)
    raise with their traceback."""
    try:
        code = cli.main(args=list(argv), standalone_mode=False, prog_name="tagger")
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        return 130
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except Exception as exc:
        # Our own errors and unreachable services (Postgres, Redis, S3) get one line naming
        # the service and its masked URL; anything else is a bug and keeps its traceback.
        from tagger.service_errors import user_error

        failure = user_error(exc, _settings_or_none())
        if failure is None:
            raise
        click.echo(f"error: {failure.message}", err=True)
        return failure.exit_code
    # Commands return nothing; an int is an explicit exit (`--help`, a stalled `jobs watch`).
    return code if isinstance(code, int) else 0


def main() -> None:
    """The `tagger` console script."""
    # Process-wide, so here rather than in `run`: a caller embedding `run` keeps its own.
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    sys.exit(run(sys.argv[1:]))


def _settings_or_none() -> Settings | None:
    # The environment the command read; None when it is unusable (that error is shown).
    try:
        return load_settings()
    except TaggerError:
        return None


if __name__ == "__main__":
    main()
