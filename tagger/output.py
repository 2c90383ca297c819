"""Printing rows as a table, CSV or JSON (`--format`)."""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Sequence
from datetime import datetime
from typing import Any, TextIO

FORMATS = ("table", "csv", "json")
TAG_COLUMNS = (
    "item_id",
    "gender",
    "gender_score",
    "product_type",
    "product_score",
    "model_version",
    "tagged_at",
)


def _plain(value: Any, *, human: bool = False) -> Any:
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S") if human else value.isoformat()
    if isinstance(value, float):
        return round(value, 4)
    return value


def render(
    rows: Sequence[dict[str, Any]],
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
                c, justify="right" if c.endswith(("score", "total", "done")) else "left"
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
