"""`tagger review`: the thresholds under which tags need a person's look."""

from __future__ import annotations

import click

from tagger.cli.context import Context, pass_ctx
from tagger.cli.labels import by_option
from tagger.output import format_option


@click.group("review")
def review() -> None:
    """Review thresholds: which tags `current_tags.needs_review` marks (and the page queues)."""


def _version(session, version: str | None) -> str:
    from tagger.exceptions import NoActiveModel
    from tagger.registry import get_active_model_version

    if version is not None:
        return version
    active = get_active_model_version(session=session)
    if active is None:
        raise NoActiveModel("no active model version: name one with --version")
    return active.version


@review.command("thresholds")
@click.option("--version", help="A model version (default: the active one).")
@format_option
@pass_ctx
def thresholds(ctx: Context, version: str | None, fmt: str) -> None:
    """Each class's threshold: a product tag whose margin over the second-best type, or a
    gender tag whose score, is below it needs review."""
    from tagger.output import render
    from tagger.thresholds import list_thresholds

    with ctx.sessions() as session:
        name = _version(session, version)
        rows = [
            {
                "head": t.head,
                "class": t.label,
                "threshold": round(t.threshold, 4),
                "source": t.source,
                "set_by": t.set_by or "",
            }
            for t in list_thresholds(session=session, version=name)
        ]
    render(
        rows,
        columns=["head", "class", "threshold", "source", "set_by"],
        fmt=fmt,
        title=f"review thresholds of {name}",
    )


@review.command("set-threshold")
@click.argument("value", type=click.FloatRange(0, 1))
@click.option("--product-type", help="The product type whose margin threshold to set.")
@click.option("--gender", help="The gender whose score threshold to set.")
@click.option("--version", help="A model version (default: the active one).")
@by_option
@pass_ctx
def set_threshold_(
    ctx: Context,
    value: float,
    product_type: str | None,
    gender: str | None,
    version: str | None,
    by: str,
) -> None:
    """Set one class's threshold by hand (VALUE between 0 and 1)."""
    from tagger.thresholds import GENDER, PRODUCT, set_threshold

    if (product_type is None) == (gender is None):
        raise click.UsageError("give exactly one of --product-type and --gender")
    head, label = (PRODUCT, product_type) if product_type is not None else (GENDER, gender)
    assert label is not None
    with ctx.sessions.begin() as session:
        name = _version(session, version)
        set_threshold(session=session, version=name, head=head, label=label, threshold=value, by=by)
    click.echo(f"{name}: {head} {label!r} needs review below {value}")
