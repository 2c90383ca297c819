"""Reading catalogue files (CSV or JSON Lines). Pure: no database, no network.

Files are read as a stream, one line at a time, so memory does not grow with the file:
each row is checked on its own as it is read (:func:`check_row`) and a malformed one is
refused with its line. What needs the whole file (an item id given twice) is found by the
importer's staging table, which keeps each row's line (:func:`duplicate_error` words it).
:func:`read_catalogue` still returns a list, for small callers that want one.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from tagger.exceptions import CatalogueError
from tagger.uris import is_file_url, is_s3, looks_like_url, s3_names_object

MAX_ITEM_ID = 255
CSV_SUFFIXES = (".csv",)
JSONL_SUFFIXES = (".jsonl", ".ndjson", ".json")


@dataclass(frozen=True)
class CatalogueItem:
    item_id: str
    image_uri: str
    title: str | None = None
    fingerprint: str | None = None


class CatalogueRow(NamedTuple):
    """One checked row and the line it came from. A tuple, not a dataclass: a million of
    them are made per million-line file, and the staging table takes them as they are."""

    line: int
    item_id: str
    image_uri: str
    title: str | None = None
    fingerprint: str | None = None


class CatalogueFile:
    """A catalogue file read as a stream of checked rows (iterate it once).

    ``bytes_read`` follows the reading, so a progress bar can show how far it got
    against ``size``.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_file():
            raise CatalogueError(f"catalogue file not found: {self.path}")
        suffix = self.path.suffix.lower()
        if suffix not in CSV_SUFFIXES + JSONL_SUFFIXES:
            raise CatalogueError(f"{self.path}: unknown catalogue format (use .csv or .jsonl)")
        self.is_csv = suffix in CSV_SUFFIXES
        self.source = str(self.path)
        self.size = self.path.stat().st_size
        self.bytes_read = 0

    def __iter__(self) -> Iterator[CatalogueRow]:
        base = self.path.parent.resolve()
        with self.path.open("rb") as f:
            lines = self._text_lines(f)
            if self.is_csv:
                yield from _csv_rows(lines, self.source, base)
            else:
                for line, row in _jsonl_rows(lines, self.source):
                    yield check_row(line, row, source=self.source, base_dir=base)

    def _text_lines(self, f: Iterable[bytes]) -> Iterator[str]:
        # Decoded line by line (not by the text layer's 8 KB chunks) so a bad byte is
        # reported on its own line, at its offset in the file.
        offset = 0
        for number, raw in enumerate(f, start=1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise CatalogueError(
                    f"not UTF-8 text ({exc.reason} at byte {offset + exc.start})",
                    line=number,
                    source=self.source,
                ) from None
            if number == 1 and text.startswith("\ufeff"):
                text = text[1:]  # a byte-order mark, as Excel writes one
            offset += len(raw)
            self.bytes_read = offset
            yield text


def read_catalogue(path: str | Path) -> list[CatalogueItem]:
    """Parse a ``.csv`` or ``.jsonl``/``.ndjson`` file into validated items (in memory:
    for small files; `tagger import` streams through the staging table instead)."""
    file = CatalogueFile(path)
    return _unique_items(file, source=file.source)


def _csv_rows(lines: Iterator[str], source: str, base_dir: Path) -> Iterator[CatalogueRow]:
    reader = csv.reader(lines)
    try:
        header = [h.strip() for h in next(reader, [])]
        if not header:
            raise CatalogueError(
                "empty file: expected a header with item_id,image_uri", source=source
            )
        missing = {"item_id", "image_uri"} - set(header)
        if missing:
            raise CatalogueError(
                f"header is missing {', '.join(sorted(missing))} (found: {', '.join(header)})",
                line=1,
                source=source,
            )
        width = len(header)
        # Cells by position, not a dict per row: this loop runs once per line of the file.
        # A short row lacks its last cells, read as missing (None), as csv.DictReader does.
        at_id, at_uri = header.index("item_id"), header.index("image_uri")
        at_title = header.index("title") if "title" in header else None
        at_caption = header.index("caption") if "caption" in header else None
        for cells in reader:
            n = len(cells)
            if n > width:
                raise CatalogueError(
                    f"{n} fields, header has {width}", line=reader.line_num, source=source
                )
            item_id = cells[at_id].strip() if at_id < n else ""
            # Only a row without an id can be blank: the join is skipped for the others.
            if not item_id and not "".join(cells).strip():
                continue  # blank line
            title = cells[at_title] if at_title is not None and at_title < n else None
            if title is None and at_caption is not None and at_caption < n:
                title = cells[at_caption]
            yield _checked(
                reader.line_num,
                item_id,
                cells[at_uri].strip() if at_uri < n else "",
                title.strip() or None if title is not None else None,
                source,
                base_dir,
            )
    except csv.Error as exc:
        raise CatalogueError(
            f"unreadable CSV ({exc})", line=reader.line_num, source=source
        ) from None


def _jsonl_rows(lines: Iterator[str], source: str) -> Iterator[tuple[int, dict]]:
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise CatalogueError(f"invalid JSON ({exc.msg})", line=number, source=source) from None
        if not isinstance(row, dict):
            raise CatalogueError("expected a JSON object per line", line=number, source=source)
        yield number, row


def check_row(line: int, row: dict, *, source: str, base_dir: Path | None = None) -> CatalogueRow:
    """One row as a CatalogueRow, or a CatalogueError naming its line."""
    item_id = _text(row.get("item_id"), "item_id", line, source)
    uri = _text(row.get("image_uri"), "image_uri", line, source)
    title = row.get("title")
    if title is None:
        title = row.get("caption")
    title = _text(title, "title", line, source) or None
    return _checked(line, item_id, uri, title, source, base_dir)


def _checked(
    line: int, item_id: str, uri: str, title: str | None, source: str, base_dir: Path | None
) -> CatalogueRow:
    # Stripped strings in; the rules every row must meet, wherever it was read.
    if not item_id:
        raise CatalogueError("item_id is empty", line=line, source=source)
    if len(item_id) > MAX_ITEM_ID:
        raise CatalogueError(
            f"item_id is longer than {MAX_ITEM_ID} characters", line=line, source=source
        )
    if not uri:
        raise CatalogueError(f"image_uri is empty for item {item_id!r}", line=line, source=source)
    if "\x00" in item_id or "\x00" in uri or (title is not None and "\x00" in title):
        # Postgres text cannot hold it: refused here, by its line
        raise CatalogueError("a field contains a NUL character", line=line, source=source)
    if looks_like_url(uri):
        # Looser than storage's parse_uri on purpose: rows are refused here only for what
        # is wrong with the whole import; storage reports other bad URIs per item.
        if is_s3(uri):
            # s3://bucket/key with no slash at either end names an object without the
            # slicing s3_names_object does (once per row); other shapes ask it.
            slash = uri.find("/", 5)
            if not (5 < slash < len(uri) - 1 and uri[-1] != "/") and not s3_names_object(uri):
                raise CatalogueError(
                    f"image_uri {uri!r} of item {item_id!r} has no object key",
                    line=line,
                    source=source,
                )
        elif not is_file_url(uri):
            raise CatalogueError(
                f"image_uri {uri!r} of item {item_id!r}: only s3:// and local paths are supported",
                line=line,
                source=source,
            )
    elif base_dir is not None and not Path(uri).is_absolute():
        uri = str((base_dir / uri).resolve())  # relative paths are relative to the file
    return CatalogueRow(line, item_id, uri, title)


def duplicate_error(item_id: str, *, first_line: int, line: int, source: str) -> CatalogueError:
    """The error for an item id given twice in a file: the later line, naming the first."""
    return CatalogueError(
        f"duplicate item_id {item_id!r} (first on line {first_line})", line=line, source=source
    )


def validate(
    rows: Iterable[tuple[int, dict]], *, source: str, base_dir: Path | None = None
) -> list[CatalogueItem]:
    """Turn (line number, row) pairs into items; refuse the first bad row by its line."""
    return _unique_items(
        (check_row(line, row, source=source, base_dir=base_dir) for line, row in rows),
        source=source,
    )


def _unique_items(rows: Iterable[CatalogueRow], *, source: str) -> list[CatalogueItem]:
    items: list[CatalogueItem] = []
    seen: dict[str, int] = {}
    for row in rows:
        if row.item_id in seen:
            raise duplicate_error(
                row.item_id, first_line=seen[row.item_id], line=row.line, source=source
            )
        seen[row.item_id] = row.line
        items.append(CatalogueItem(row.item_id, row.image_uri, row.title, row.fingerprint))
    if not items:
        raise CatalogueError("no items in file", source=source)
    return items


def _text(value: object, field: str, line: int, source: str) -> str:
    if value is None:
        return ""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and field == "item_id":
        return str(value)
    if not isinstance(value, str):
        raise CatalogueError(
            f"{field} must be a string, got {type(value).__name__}", line=line, source=source
        )
    return value.strip()
