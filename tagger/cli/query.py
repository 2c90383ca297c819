"""`tagger tags` and `tagger jobs`: reading tags and following jobs."""

from __future__ import annotations

from datetime import datetime, timezone

import click

from tagger.cli.context import Context, pass_ctx
from tagger.output import format_option

#: Rows `tagger tags` shows without --limit (table and json).
PAGE_ROWS = 1000


@click.group("tags", invoke_without_command=True)
@click.option("--gender")
@click.option("--product-type")
@click.option("--min-score", type=click.FloatRange(0, 1))
@click.option("--item", "item_id")
@click.option("--job", "job_id", type=int)
@click.option("--model-version", help="That version's tags instead of the current ones.")
@click.option("--since", type=click.DateTime(["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S"]), help="UTC.")
@click.option(
    "--limit",
    type=click.IntRange(1),
    help=f"Most rows (default: {PAGE_ROWS} for table and json; csv exports every row).",
)
@click.option("--after", metavar="ITEM_ID", help="Rows after this item id (the next page).")
@click.option(
    "--source",
    type=click.Choice(["human", "model"]),
    help="Only items showing a person's label (human) or a model's tag (model).",
)
@format_option
@click.pass_context
def tags(click_ctx: click.Context, fmt: str, **filters) -> None:
    """Current tags per item (the current_tags view), filtered, in item-id order; page with
    --after. `tags prune` drops old ones."""
    if click_ctx.invoked_subcommand is not None:
        return
    from tagger.jobs import get_job
    from tagger.output import TAG_COLUMNS, render
    from tagger.registry import get_model_version
    from tagger.tags import TagQuery, iter_tags

    ctx = click_ctx.ensure_object(Context)
    since: datetime | None = filters.pop("since")
    if since is not None:
        since = since.replace(tzinfo=timezone.utc)
    asked = filters.pop("limit")
    # A page by default: a terminal cannot show a catalogue. csv streams everything.
    limit = asked or (None if fmt == "csv" else PAGE_ROWS)
    # One row more than shown says whether there is a next page.
    if filters["source"] and filters["model_version"]:
        raise click.UsageError("--source reads current tags; --model-version a version's own")
    query = TagQuery(**filters, since=since, limit=limit + 1 if limit else None)
    with ctx.sessions() as session:
        if query.job_id is not None:
            from tagger.retention import ensure_ledger_kept

            # A pruned job's item list is gone: an error, not an empty result.
            ensure_ledger_kept(session=session, job=get_job(session=session, job_id=query.job_id))
        if query.model_version is not None:
            get_model_version(session=session, version=query.model_version)
        if fmt == "csv" and limit is None:
            render(iter_tags(session=session, query=query), columns=TAG_COLUMNS, fmt=fmt)
            return
        rows = list(iter_tags(session=session, query=query))
    more = limit is not None and len(rows) > limit
    rows = rows[:limit]
    render(rows, columns=TAG_COLUMNS, fmt=fmt)
    if more:
        click.echo(
            f"showing the first {limit} rows; more exist: add --after {rows[-1]['item_id']} "
            "for the next page, or --format csv for every row",
            err=True,
        )


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


@click.command("jobs")
@click.argument("args", nargs=-1)
@format_option
@click.option("--interval", type=click.FloatRange(0.1), default=1.0, help="Seconds, for watch.")
@click.option(
    "--older-than",
    type=click.IntRange(1),
    metavar="DAYS",
    help="For prune: days since a job finished (default: TAGGER_LEDGER_RETENTION_DAYS).",
)
@click.option("--dry-run", is_flag=True, help="For prune: count what would go, delete nothing.")
@click.pass_context
def jobs(
    click_ctx: click.Context,
    args: tuple[str, ...],
    fmt: str,
    interval: float,
    older_than: int | None,
    dry_run: bool,
) -> None:
    """`jobs` lists jobs, `jobs ID` shows one with failures by reason, `jobs watch ID`
    shows a live progress bar until the job ends, `jobs resume ID` queues the job's
    pending items again now (after Redis was down, or when the job stalled), `jobs prune
    [--older-than DAYS] [--dry-run]` deletes the per-item ledger of jobs that finished
    over DAYS ago (their counters and the failures stay)."""
    from tagger.output import render
    from tagger.progress import describe_jobs
    from tagger.states import STALLED

    ctx = click_ctx.ensure_object(Context)
    if (older_than is not None or dry_run) and args[:1] != ("prune",):
        raise click.UsageError("--older-than and --dry-run go with `tagger jobs prune`")
    if args and args[0] == "prune":
        if len(args) != 1:
            raise click.UsageError("usage: tagger jobs prune [--older-than DAYS] [--dry-run]")
        _prune(ctx, older_than=older_than, dry_run=dry_run)
        return
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
        pruned = job_id is not None and _ledger_pruned(session, job_id)
    if pruned:
        # The per-item figures come from the ledger, which is gone: say so rather than
        # show no failures and no redeliveries. The counters are the job row's own.
        rows[0].update(failures="(ledger pruned)", redelivered=None, died=None)
        click.echo(
            f"job {job_id}: its per-item ledger was pruned (finished over "
            "TAGGER_LEDGER_RETENTION_DAYS ago); the counters above are kept",
            err=True,
        )
    render(rows, columns=list(rows[0]) if rows else ["id"], fmt=fmt)


def _ledger_pruned(session, job_id: int) -> bool:
    from tagger.jobs import get_job
    from tagger.retention import ledger_pruned

    return ledger_pruned(session=session, job=get_job(session=session, job_id=job_id))


def _prune(ctx: Context, *, older_than: int | None, dry_run: bool) -> None:
    """`tagger jobs prune`: delete old finished jobs' ledger rows, in chunks."""
    from tagger.retention import prune_ledgers

    days = older_than or ctx.settings.ledger_retention_days
    if not days:
        click.echo(
            "TAGGER_LEDGER_RETENTION_DAYS is 0 (keep forever): nothing pruned; "
            "give --older-than DAYS to prune anyway",
            err=True,
        )
        return
    done = prune_ledgers(sessions=ctx.sessions, older_than_days=days, dry_run=dry_run)
    verb = "would prune" if dry_run else "pruned"
    click.echo(
        f"{verb} the ledger of {done.jobs} job{'s' if done.jobs != 1 else ''} finished over "
        f"{days} days ago: {done.rows} job_items rows"
        + (" (dry run: nothing deleted)" if dry_run else "; counters and failures kept"),
        err=True,
    )


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
