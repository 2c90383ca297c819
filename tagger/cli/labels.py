"""`tagger labels`: a person's corrections, shown over any model's tag."""

from __future__ import annotations

import getpass

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


def _describe(fields: dict | None) -> str:
    if not fields:
        return "no label"
    shown = [f"{k}={v}" for k, v in fields.items() if v is not None]
    return ", ".join(shown) or "no label"
