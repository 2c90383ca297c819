"""`tagger labels`: a person's corrections, shown over any model's tag."""

from __future__ import annotations

import getpass
from datetime import datetime, timezone
from pathlib import Path

import click

from tagger.cli.context import Context, pass_ctx


def _who() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no user name in the environment or the password file
        return ""


by_option = click.option(
    "--by",
    default=_who,
    show_default="the login name",
    help="Who makes the change (recorded in the audit).",
)


@click.group("labels")
def labels() -> None:
    """Human labels: shown by current_tags over any model's tag (source = human), kept
    through re-tagging and roll-outs; every change is audited."""


@labels.command("set")
@click.argument("item_id")
@click.option("--gender")
@click.option("--product-type")
@click.option("--note")
@by_option
@pass_ctx
def set_(
    ctx: Context, item_id: str, gender: str | None, product_type: str | None, note, by: str
) -> None:
    """Label ITEM_ID (a field not given keeps its labelled value, if any)."""
    from tagger.labels import set_label

    with ctx.sessions.begin() as session:
        done = set_label(
            session=session,
            item_id=item_id,
            by=by,
            gender=gender,
            product_type=product_type,
            note=note,
        )
    click.echo(f"{item_id}: {_describe(done.before)} -> {_describe(done.after)} (by {by})")


@labels.command("clear")
@click.argument("item_id")
@by_option
@pass_ctx
def clear(ctx: Context, item_id: str, by: str) -> None:
    """Remove ITEM_ID's label: its model tag shows again."""
    from tagger.labels import clear_label

    with ctx.sessions.begin() as session:
        done = clear_label(session=session, item_id=item_id, by=by)
    click.echo(f"{item_id}: {_describe(done.before)} -> no label (by {by})")


@labels.command("history")
@click.argument("item_id")
@pass_ctx
def history(ctx: Context, item_id: str) -> None:
    """Every change of ITEM_ID's label: when, who, before, after."""
    from tagger.labels import label_history

    with ctx.sessions() as session:
        changes = label_history(session=session, item_id=item_id)
        for change in changes:
            click.echo(
                f"{change.changed_at:%Y-%m-%d %H:%M:%S} {change.changed_by}: "
                f"{_describe(change.before)} -> {_describe(change.after)}"
            )
    if not changes:
        click.echo(f"{item_id}: no label changes")


#: `labels export` wrote DIR but skipped some items (1 is an error: nothing written).
EXIT_PARTIAL = 3


@labels.command("export")
@click.option(
    "--out",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder to write (labels_front.csv + selected_images/), made whole at the end.",
)
@click.option("--force", is_flag=True, help="Replace OUT if it is not empty.")
@click.option(
    "--since",
    type=click.DateTime(["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S"]),
    help="Only labels set or changed at or after this time (UTC).",
)
@click.option("--by", help="Only labels whose last change was by this person.")
@click.pass_context
def export(
    click_ctx: click.Context, out: Path, force: bool, since: datetime | None, by: str | None
) -> None:
    """Write the labelled items to OUT as a training set.

    OUT gets DeepFashion-MultiModal's layout (train with `python -m train fit --data
    OUT/labels_front.csv`): the images fetched from storage, titles as captions, and a
    field the label leaves empty taken from the item's current tag. Items that cannot be
    exported are named and skipped; the exit code is then 3 (OUT written without them),
    or 1 when none could be (nothing written)."""
    from tagger.export import (
        LABELS_FILE,
        check_out,
        export_labels,
        labelled_items,
        storage_fetch,
    )
    from tagger.output import progress_bar

    ctx = click_ctx.ensure_object(Context)
    check_out(out, force=force)  # before any work: a refusal costs nothing
    with ctx.sessions() as session:
        items = labelled_items(
            session=session, since=since and since.replace(tzinfo=timezone.utc), by=by
        )
    # The session is closed before the fetches: no transaction idles through them.
    settings = ctx.settings
    with progress_bar(counts=True) as on_progress:
        result = export_labels(
            items=items,
            fetch=storage_fetch(settings),
            out=out,
            force=force,
            max_pixels=settings.max_image_pixels,
            decode_workers=settings.decode_workers,
            on_progress=on_progress,
        )
    for s in result.skipped:
        click.echo(f"  skipped {s.item_id}: {s.reason}: {s.message}", err=True)
    reasons = ", ".join(f"{r} {n}" for r, n in result.reasons().items())
    skipped = f"{len(result.skipped)} skipped" + (f" ({reasons})" if reasons else "")
    if not result.written:
        click.echo(f"0 exported, {skipped}: nothing written to {out}", err=True)
        click_ctx.exit(1)
    click.echo(f"{result.exported} exported to {out}, {skipped}", err=True)
    click.echo(str(out / LABELS_FILE))  # what `python -m train fit --data` takes
    if result.skipped:
        click_ctx.exit(EXIT_PARTIAL)


def _describe(fields: dict | None) -> str:
    if not fields:
        return "no label"
    shown = [f"{k}={v}" for k, v in fields.items() if v is not None]
    return ", ".join(shown) or "no label"
