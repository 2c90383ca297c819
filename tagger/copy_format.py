"""Catalogue rows in Postgres ``COPY`` text format, streamed a chunk at a time. Pure: no
database here (tagger.staging hands the stream to psycopg2's ``copy_expert``)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from itertools import islice

from tagger.catalogue import CatalogueRow


class CopyStream:
    """The rows as COPY text, a chunk per ``read`` (psycopg2's copy_expert reads it)."""

    def __init__(
        self, rows: Iterator[CatalogueRow], chunk_rows: int, on_chunk: Callable[[], None] | None
    ):
        self.rows, self.chunk_rows, self.on_chunk = rows, chunk_rows, on_chunk
        self.count = 0

    def read(self, size: int = -1) -> str:
        chunk = list(islice(self.rows, self.chunk_rows))
        if not chunk:
            return ""  # end of data: the COPY completes
        self.count += len(chunk)
        if self.on_chunk is not None:
            self.on_chunk()
        return copy_text(chunk)


def copy_text(rows: list[CatalogueRow]) -> str:
    """Rows in COPY's text format, NULL written as an empty field: checked rows never hold
    an empty string (a missing title or fingerprint is None)."""
    # Formatted without escaping first (one f-string a row); the separators counted over
    # the whole chunk tell whether any field held a tab, a line break or a backslash, and
    # only then is the chunk escaped field by field.
    text = "".join([f"{r[0]}\t{r[1]}\t{r[2]}\t{r[3] or ''}\t{r[4] or ''}\n" for r in rows])
    n = len(rows)
    if "\\" in text or "\r" in text or text.count("\t") != 4 * n or text.count("\n") != n:
        text = "".join("\t".join(_escape(field) for field in row) + "\n" for row in rows)
    return text


def _escape(value: object) -> str:
    if value is None:
        return ""
    text = str(value)
    for char, escaped in (("\\", "\\\\"), ("\t", "\\t"), ("\n", "\\n"), ("\r", "\\r")):
        text = text.replace(char, escaped)
    return text
