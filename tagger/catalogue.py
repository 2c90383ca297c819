"""Reading catalogue files (CSV or JSON Lines). Pure: no database, no network.

The whole file is read and validated before anything is written, so a malformed file is
refused with the line that is wrong and nothing half-imported is left behind.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from tagger.exceptions import CatalogueError
from tagger.uris import is_file_url, is_s3, looks_like_url, s3_names_object

MAX_ITEM_ID = 255


@dataclass(frozen=True)
class CatalogueItem:
    item_id: str
    image_uri: str
    title: str | None = None
    fingerprint: str | None = None


def read_catalogue(path: str | Path) -> list[CatalogueItem]:
    """Parse a ``.csv`` or ``.jsonl``/``.ndjson`` file into validated items."""
    path = Path(path)
    if not path.is_file():
        raise CatalogueError(f"catalogue file not found: {path}")
    suffix = path.suffix.lower()
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise CatalogueError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    base = path.parent.resolve()
    if suffix == ".csv":
        rows = _csv_rows(text, str(path))
    elif suffix in (".jsonl", ".ndjson", ".json"):
        rows = _jsonl_rows(text, str(path))
    else:
        raise CatalogueError(f"{path}: unknown catalogue format (use .csv or .jsonl)")
    return validate(rows, source=str(path), base_dir=base)


def _csv_rows(text: str, source: str) -> Iterator[tuple[int, dict]]:
    reader = csv.DictReader(io.StringIO(text, newline=""))
    header = [h.strip() for h in (reader.fieldnames or [])]
    if not header:
        raise CatalogueError("empty file: expected a header with item_id,image_uri", source=source)
    reader.fieldnames = header
    missing = {"item_id", "image_uri"} - set(header)
    if missing:
        raise CatalogueError(
            f"header is missing {', '.join(sorted(missing))} (found: {', '.join(header)})",
            line=1,
            source=source,
        )
    for row in reader:
        if None in row:  # more cells than header columns
            raise CatalogueError(
                f"{len(header) + len(row[None])} fields, header has {len(header)}",
                line=reader.line_num,
                source=source,
            )
        if not any((v or "").strip() for v in row.values()):
            continue  # blank line
        yield reader.line_num, row


def _jsonl_rows(text: str, source: str) -> Iterator[tuple[int, dict]]:
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise CatalogueError(f"invalid JSON ({exc.msg})", line=number, source=source) from None
        if not isinstance(row, dict):
            raise CatalogueError("expected a JSON object per line", line=number, source=source)
        yield number, row


def validate(
    rows: Iterable[tuple[int, dict]], *, source: str, base_dir: Path | None = None
) -> list[CatalogueItem]:
    """Turn (line number, row) pairs into items; refuse the first bad row by its line."""
    items: list[CatalogueItem] = []
    seen: dict[str, int] = {}
    for line, row in rows:
        item_id = _text(row.get("item_id"), "item_id", line, source)
        uri = _text(row.get("image_uri"), "image_uri", line, source)
        if not item_id:
            raise CatalogueError("item_id is empty", line=line, source=source)
        if len(item_id) > MAX_ITEM_ID:
            raise CatalogueError(
                f"item_id is longer than {MAX_ITEM_ID} characters", line=line, source=source
            )
        if not uri:
            raise CatalogueError(
                f"image_uri is empty for item {item_id!r}", line=line, source=source
            )
        # Looser than storage's parse_uri on purpose: rows are refused here only for what
        # is wrong with the whole import; storage reports other bad URIs per item.
        if looks_like_url(uri) and not (is_s3(uri) or is_file_url(uri)):
            raise CatalogueError(
                f"image_uri {uri!r} of item {item_id!r}: only s3:// and local paths are supported",
                line=line,
                source=source,
            )
        if is_s3(uri) and not s3_names_object(uri):
            raise CatalogueError(
                f"image_uri {uri!r} of item {item_id!r} has no object key", line=line, source=source
            )
        if not looks_like_url(uri) and base_dir is not None and not Path(uri).is_absolute():
            uri = str((base_dir / uri).resolve())  # relative paths are relative to the file
        if item_id in seen:
            raise CatalogueError(
                f"duplicate item_id {item_id!r} (first on line {seen[item_id]})",
                line=line,
                source=source,
            )
        seen[item_id] = line
        title = row.get("title")
        if title is None:
            title = row.get("caption")
        title = _text(title, "title", line, source) or None
        items.append(CatalogueItem(item_id=item_id, image_uri=uri, title=title))
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
