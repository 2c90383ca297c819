"""Where a catalogue comes from: a CSV/JSON Lines file, a local image folder, or every
image under an S3 prefix. Each is read as a stream of rows (:func:`open_source`), so
memory does not grow with the catalogue; the importer stages the rows and finds ids given
twice. :func:`load_items` still reads one whole, for small callers that want a list."""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from tagger.catalogue import (
    CatalogueFile,
    CatalogueItem,
    CatalogueRow,
    duplicate_error,
    read_catalogue,
)
from tagger.exceptions import CatalogueError
from tagger.settings import Settings
from tagger.uris import is_s3


class CatalogueSource:
    """A catalogue as a stream of checked rows (iterate it once), with what a progress bar
    and the importer's duplicate check need to say where they are."""

    label: str  # the job's ``source``
    size: int  # the file's size in bytes; 0 for a listing (its length is not known ahead)

    def __iter__(self) -> Iterator[CatalogueRow]:
        raise NotImplementedError

    @property
    def position(self) -> int:
        """How far reading got: bytes for a file, images for a listing."""
        raise NotImplementedError

    def duplicate(self, item_id: str, *, first: Staged, again: Staged) -> CatalogueError:
        raise NotImplementedError

    def empty(self) -> CatalogueError | None:
        """The error for a source with no rows; None where that is no error."""
        raise NotImplementedError


@dataclass(frozen=True)
class Staged:
    """Where a staged row came from: its line (a listing's ordinal) and image."""

    line: int
    image_uri: str


class FileSource(CatalogueSource):
    def __init__(self, path: Path):
        self.file = CatalogueFile(path)
        self.label = str(path)
        self.size = self.file.size

    def __iter__(self) -> Iterator[CatalogueRow]:
        return iter(self.file)

    @property
    def position(self) -> int:
        return self.file.bytes_read

    def duplicate(self, item_id: str, *, first: Staged, again: Staged) -> CatalogueError:
        return duplicate_error(
            item_id, first_line=first.line, line=again.line, source=self.file.source
        )

    def empty(self) -> CatalogueError:
        return CatalogueError("no items in file", source=self.file.source)


class ListingSource(CatalogueSource):
    """Every image in a local folder or under an S3 prefix, in key order (listed lazily:
    S3 hands out 1,000 keys a page)."""

    def __init__(self, settings: Settings, *, prefix: str, label: str, local: bool):
        from tagger.listing import list_images
        from tagger.storage import make_s3_client

        self.label = label
        self.size = 0
        self.listed = 0
        client = None if local else make_s3_client(settings)
        self.images = list_images(prefix, s3_client=client)
        # The first page is listed now, before the import opens its transaction: a missing
        # bucket or folder, or S3 down, is the error reported, as when listings were read
        # whole up front.
        self.first = next(self.images, None)

    def __iter__(self) -> Iterator[CatalogueRow]:
        if self.first is None:
            return
        for image in itertools.chain([self.first], self.images):
            self.listed += 1
            yield CatalogueRow(self.listed, image.item_id, image.uri, None, image.fingerprint)

    @property
    def position(self) -> int:
        return self.listed

    def duplicate(self, item_id: str, *, first: Staged, again: Staged) -> CatalogueError:
        return CatalogueError(
            f"{again.image_uri} and {first.image_uri} map to the same item id {item_id!r}"
        )

    def empty(self) -> CatalogueError:
        return CatalogueError(f"no images (.jpg, .jpeg, .png, .webp) found under {self.label}")


def open_source(
    settings: Settings, *, file: Path | None = None, s3_prefix: str | None = None
) -> CatalogueSource:
    """The catalogue to import, not yet read: a file is checked to exist and be of a known
    format; a folder or prefix gets its first listing page (so an unreachable S3, a missing
    bucket or no images at all are refused before any database work). Rows are read as the
    source is iterated."""
    if s3_prefix is not None:
        if not is_s3(s3_prefix):
            raise CatalogueError(f"--s3-prefix must start with s3://, got {s3_prefix!r}")
        listing = ListingSource(settings, prefix=s3_prefix, label=s3_prefix, local=False)
    elif file is not None and file.is_dir():
        listing = ListingSource(settings, prefix=str(file.resolve()), label=str(file), local=True)
    elif file is not None:
        return FileSource(file)
    else:
        raise CatalogueError("no catalogue given")
    if listing.first is None:
        raise listing.empty()
    return listing


def load_items(
    settings: Settings, *, file: Path | None = None, s3_prefix: str | None = None
) -> tuple[list[CatalogueItem], str]:
    """The items to import, all in memory, and a label for the job's ``source``."""
    source = open_source(settings, file=file, s3_prefix=s3_prefix)
    if isinstance(source, FileSource):
        return read_catalogue(file), source.label  # type: ignore[arg-type]
    items: list[CatalogueItem] = []
    seen: dict[str, Staged] = {}
    for row in source:
        here = Staged(row.line, row.image_uri)
        if row.item_id in seen:
            raise source.duplicate(row.item_id, first=seen[row.item_id], again=here)
        seen[row.item_id] = here
        items.append(CatalogueItem(row.item_id, row.image_uri, row.title, row.fingerprint))
    if not items:
        raise source.empty()
    return items, source.label


class ListSource(CatalogueSource):
    """Items already in memory (``import_items``): line N is the N-th item."""

    def __init__(self, items: Sequence[CatalogueItem], *, label: str):
        self.items, self.label, self.size = items, label, len(items)
        self.read = 0

    def __iter__(self) -> Iterator[CatalogueRow]:
        for line, item in enumerate(self.items, start=1):
            self.read = line
            yield CatalogueRow(line, item.item_id, item.image_uri, item.title, item.fingerprint)

    @property
    def position(self) -> int:
        return self.read

    def duplicate(self, item_id: str, *, first: Staged, again: Staged) -> CatalogueError:
        return duplicate_error(item_id, first_line=first.line, line=again.line, source=self.label)

    def empty(self) -> CatalogueError | None:
        return None  # as before staging: an empty list makes an empty, finished job
