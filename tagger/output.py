"""What the `tagger` command shows: rows as a table, CSV or JSON (`--format`), progress
bars, and the summary lines of imports, runs and watched jobs. The use cases return data
and report progress through plain callables; this module turns both into output.

rich is imported only where a table or a bar is drawn: the worker imports the CLI, and
must not load it."""

from __future__ import annotations

import csv
import json
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Any, TextIO, TypeVar

import click

from tagger.states import ACTIVE_STATUSES

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID

    from tagger.embedded import RunOutcome
    from tagger.enqueue import ImportOutcome, Resumed
    from tagger.progress import JobSnapshot, OnProgress
    from tagger.registry import VersionSummary

FORMATS = ("table", "csv", "json")
TAG_COLUMNS = (
    "item_id",
    "gender",
    "gender_score",
    "product_type",
    "product_score",
    "product_margin",
    "model_version",
    "source",
    "tagged_at",
)


def _plain(value: Any, *, human: bool = False) -> Any:
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S") if human else value.isoformat()
    if isinstance(value, float):
        return round(value, 4)
    return value


def render(
    rows: Iterable[dict[str, Any]],
    *,
    columns: Sequence[str],
    fmt: str = "table",
    title: str | None = None,
    out: TextIO | None = None,
) -> None:
    out = out or sys.stdout
    if fmt == "json":
        json.dump([{c: _plain(r.get(c)) for c in columns} for r in rows], out, indent=2)
        out.write("\n")
    elif fmt == "csv":
        writer = csv.DictWriter(out, fieldnames=list(columns), extrasaction="ignore")
        writer.writeheader()
        for r in rows:
            writer.writerow({c: _plain(r.get(c)) for c in columns})
    elif fmt == "table":
        from rich.console import Console
        from rich.table import Table

        table = Table(title=title)
        for c in columns:
            table.add_column(
                c, justify="right" if c.endswith(("score", "margin", "total", "done")) else "left"
            )
        for r in rows:
            table.add_row(
                *("" if r.get(c) is None else str(_plain(r.get(c), human=True)) for c in columns)
            )
        # In a terminal, fit the screen; piped to a file or a pager, don't wrap cells.
        console = Console(file=out)
        Console(file=out, width=console.width if console.is_terminal else 240).print(table)
    else:  # pragma: no cover - click restricts the choice
        raise ValueError(f"unknown format {fmt!r}")


F = TypeVar("F", bound=Callable[..., Any])


def format_option(command: F) -> F:
    """`--format table|csv|json` (default: table), passed to the command as ``fmt``."""
    return click.option("--format", "fmt", type=click.Choice(list(FORMATS)), default="table")(
        command
    )


def _progress(*, counts: bool, rate: bool = False, transient: bool = True) -> Progress:
    """A rich bar: the description, the bar, "done/total" (``counts``) or rich's percentage,
    the task's ``rate`` field (``rate``), and the time left."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    if not counts:
        return Progress(transient=transient)  # rich's default columns
    columns = [
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
    ]
    if rate:
        columns.append(TextColumn("{task.fields[rate]}"))
    columns.append(TimeRemainingColumn())
    return Progress(*columns, transient=transient)


@contextmanager
def progress_bar(*, counts: bool = False) -> Iterator[OnProgress]:
    """A transient bar for one long step, as a progress callback to hand to the step.

    The bar appears at the step's first report (the step knows its description and total)
    and is erased when the block ends, also on an error, so an error line stands alone.
    ``counts`` shows "done/total" items instead of a percentage.
    """
    with ExitStack() as stack:
        bar: Progress | None = None
        task: TaskID | None = None

        def report(description: str, completed: int, total: int) -> None:
            nonlocal bar, task
            if bar is None:
                bar = stack.enter_context(_progress(counts=counts))
                task = bar.add_task(description, total=total)
            bar.update(task, description=description, completed=completed, total=total)

        yield report


def watch_bar(
    poll: Callable[[], JobSnapshot],
    first: JobSnapshot,
    *,
    interval: float,
    sleep: Callable[[float], None] = time.sleep,
) -> JobSnapshot:
    """A live bar of a job, polled every ``interval`` seconds until it is no longer queued
    or running; returns the last poll. The bar stays on screen afterwards."""
    job_id, snap = first.job_id, first
    with _progress(counts=True, rate=True, transient=False) as bar:
        task = bar.add_task(f"job {job_id}", total=first.total, rate="")
        while True:
            stats = snap.stats
            bar.update(
                task,
                completed=stats.processed,
                rate=f"{stats.rate:.1f} items/s" if stats.rate else "",
                description=f"job {job_id} {stats.state}",
            )
            if not snap.active:
                return snap
            sleep(interval)
            snap = poll()


def watch_summary(snap: JobSnapshot, reasons: Mapping[str, int]) -> list[str]:
    """The lines under a watched job's bar: its outcome, then failures by reason."""
    rate = snap.stats.rate
    head = (
        f"job {snap.job_id} {snap.stats.state}: {snap.done} tagged, {snap.failed} failed, "
        f"{snap.skipped} skipped"
        + (f", {snap.moved} moved to a newer job" if snap.moved else "")
        + f" of {snap.total + snap.skipped}"
        + (f" ({rate:.1f} items/s)" if rate else "")
    )
    return [head, *(f"  {reason}: {n}" for reason, n in reasons.items())]


def import_summary(outcome: ImportOutcome) -> str:
    """`tagger import`'s line on stderr: what the catalogue held and what was queued."""
    o = outcome
    return (
        f"job {o.job_id}: {o.items} items ({o.new} new, {o.changed} changed, "
        f"{o.unchanged} unchanged); {o.to_tag} to tag in {o.batches} batches"
    )


def run_summary(outcome: RunOutcome) -> list[str]:
    """`tagger run`'s lines on stderr: the counts, then each failed item and why."""
    o = outcome
    head = (
        f"job {o.job_id}: {len(o.item_ids)} items: {o.tagged} tagged now, "
        f"{o.failed} failed, {o.skipped} already up to date"
    )
    return [head, *(f"  failed {item_id}: {why}" for item_id, why in sorted(o.failures.items()))]


def resume_summary(done: Resumed) -> str:
    """`tagger jobs resume`'s line on stderr: what was queued again, or why nothing was."""
    if done.status not in ACTIVE_STATUSES:
        return f"job {done.job_id} is {done.status}: nothing to resume"
    if not done.batches:
        return f"job {done.job_id} has no pending items: nothing to resume"
    return f"job {done.job_id}: queued {done.items} pending items in {done.batches} batches"


def model_rows(summaries: Sequence[VersionSummary]) -> list[dict[str, Any]]:
    """`tagger model list` rows: one per version, its scalar metrics joined in one cell."""
    return [
        {
            "version": s.version.version,
            "active": "yes" if s.version.is_active else "",
            "tagged_items": s.tagged_items,
            "image_size": s.version.image_size,
            "uses_text": s.version.uses_text,
            "metrics": ", ".join(
                f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}"
                for k, v in (s.version.metrics or {}).items()
                if not isinstance(v, (dict, list))
            ),
            "artifact_uri": s.version.artifact_uri,
            "created_at": s.version.created_at,
        }
        for s in summaries
    ]
