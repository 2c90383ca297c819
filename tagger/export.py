"""Exporting human labels as a training set: `tagger labels export --out DIR`.

DIR is laid out as DeepFashion-MultiModal's, the layout `python -m train fit` reads as it
is (train/data.py): ``DIR/labels_front.csv`` (``image_id, caption, path, gender,
product_type, product_id, image_type``) and the images under ``DIR/selected_images/``.
``image_id`` is the item id (what `python -m train score-tags` matches tags on), the
caption its title. The names are spelled out, not imported: tagger never imports train/
(a worker installs without it); tests/test_export.py trains on an export.

A field a label leaves NULL is filled from the item's current tag; the CSV does not say
which values came from where (the trainer treats every row alike). Items that cannot be
exported (a missing field no tag fills, an image that cannot be fetched or decoded) are
skipped and named in the result, the rest written. DIR appears whole or not at all: the
export is written to a folder beside it and renamed into place at the end.
"""

from __future__ import annotations

import csv
import errno
import hashlib
import os
import re
import shutil
import uuid
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy.orm import Session

from tagger.batching import chunked
from tagger.db import Item, Label, current_tags
from tagger.exceptions import ItemError, TaggerError
from tagger.images import decode_many

if TYPE_CHECKING:
    from tagger.progress import OnProgress
    from tagger.settings import Settings

LABELS_FILE = "labels_front.csv"
IMAGES_DIR = "selected_images"
COLUMNS = ("image_id", "caption", "path", "gender", "product_type", "product_id", "image_type")
#: The reason of an item whose label leaves a field NULL that no model tag can fill.
NO_TAG = "no_tag"
#: Images are decoded at this size only to prove they decode; the trainer decodes them
#: again at its own size.
CHECK_SIZE = 32

#: Image URIs in, each URI's bytes or the ItemError that stopped it out (the contract of
#: tagger.storage.fetch_many; :func:`storage_fetch` builds the one the CLI uses).
Fetch = Callable[[Sequence[str]], Mapping[str, bytes | ItemError]]


class ExportError(TaggerError):
    """An export that cannot start or finish (nothing to export, DIR in the way); nothing
    is written to DIR."""


@dataclass(frozen=True)
class LabelledItem:
    """A labelled item with the values to export; a field is None when neither the label
    nor a model tag has one."""

    item_id: str
    image_uri: str
    caption: str
    gender: str | None
    product_type: str | None


@dataclass(frozen=True)
class Skipped:
    item_id: str
    reason: str  # an ItemError reason (missing_image, corrupt_image, ...) or NO_TAG
    message: str


@dataclass
class ExportResult:
    out: Path
    exported: int = 0
    skipped: list[Skipped] = field(default_factory=list)

    @property
    def written(self) -> bool:
        """Whether DIR holds this export (nothing is written when no item could be)."""
        return self.exported > 0

    def reasons(self) -> dict[str, int]:
        """Skipped items by reason, most frequent first."""
        return dict(Counter(s.reason for s in self.skipped).most_common())


def labelled_items(
    *, session: Session, since: datetime | None = None, by: str | None = None
) -> list[LabelledItem]:
    """Every labelled item (labelled at or after ``since``, last labelled by ``by``) in
    item-id order, its NULL label fields filled from its current tag.

    ``current_tags`` already lays the label over the model's tag, and where the label
    leaves a field NULL it shows the model's value: so the view's fields are the values
    wanted, and the label's own are used where the item has no tag (no row in the view).
    """
    ct = current_tags
    stmt = (
        sa.select(
            Label.item_id,
            Item.image_uri,
            Item.title,
            sa.func.coalesce(Label.gender, ct.c.gender).label("gender"),
            sa.func.coalesce(Label.product_type, ct.c.product_type).label("product_type"),
        )
        .join(Item, Item.item_id == Label.item_id)
        .outerjoin(ct, ct.c.item_id == Label.item_id)
    )
    if since is not None:
        stmt = stmt.where(Label.labelled_at >= since)
    if by is not None:
        stmt = stmt.where(Label.labelled_by == by)
    # Sorted here, not by the database: Postgres sorts by its collation, SQLite by code
    # point, and the order decides which of two ids differing in case keeps its plain
    # file name (see _file_stem); the same labels should give the same folder on both.
    return sorted(
        (
            LabelledItem(r.item_id, r.image_uri, r.title or "", r.gender, r.product_type)
            for r in session.execute(stmt)
        ),
        key=lambda i: i.item_id,
    )


def check_out(out: Path, *, force: bool) -> None:
    """Refuse an ``out`` that is not a folder, or a non-empty one without ``force``."""
    if not Path(os.path.abspath(out)).name:  # the root: nothing to write beside it
        raise ExportError(f"cannot export to {out}")
    if out.exists() and not out.is_dir():
        raise ExportError(f"{out} exists and is not a folder")
    if not force and out.is_dir() and any(out.iterdir()):
        raise ExportError(f"{out} is not empty; give --force to replace it")


def export_labels(
    *,
    items: Sequence[LabelledItem],
    fetch: Fetch,
    out: Path,
    max_pixels: int,
    force: bool = False,
    decode_workers: int = 1,
    chunk_size: int = 64,
    on_progress: OnProgress | None = None,
) -> ExportResult:
    """Write ``items`` to ``out`` in the DeepFashion-MultiModal layout, fetching their
    images with ``fetch`` ``chunk_size`` at a time (so memory holds one chunk, and
    ``on_progress`` hears ("fetching images", done, total) after each).

    An item that cannot be exported is skipped and named in the result; when none can
    be, nothing is written. Raises ExportError when ``items`` is empty or ``out`` is in
    the way (see :func:`check_out`).
    """
    check_out(out, force=force)
    out = Path(os.path.abspath(out))  # "." has no name to put the temporary one beside
    if not items:
        raise ExportError("no labels to export")
    result = ExportResult(out=out)
    ready = []
    for item in items:
        missing = [f for f in ("gender", "product_type") if getattr(item, f) is None]
        if missing:
            why = f"the label has no {' or '.join(missing)} and the item has no model tag"
            result.skipped.append(Skipped(item.item_id, NO_TAG, why))
        else:
            ready.append(item)

    out.parent.mkdir(parents=True, exist_ok=True)
    # A fixed-name mkdir rather than tempfile.mkdtemp: mkdtemp's folder is private (0700),
    # and once renamed into place DIR should have the permissions any new folder gets.
    tmp = out.with_name(f".{out.name}.export-{uuid.uuid4().hex[:8]}")
    (tmp / IMAGES_DIR).mkdir(parents=True)
    report = on_progress or (lambda *_: None)
    done, taken = 0, set[str]()
    try:
        with open(tmp / LABELS_FILE, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f, lineterminator="\n")
            writer.writerow(COLUMNS)
            report("fetching images", done, len(ready))
            for chunk in chunked(ready, chunk_size):
                images = _images(chunk, fetch, max_pixels, decode_workers)
                for item, image in zip(chunk, images, strict=True):
                    if isinstance(image, ItemError):
                        result.skipped.append(Skipped(item.item_id, image.reason, str(image)))
                        continue
                    name = _file_stem(item.item_id, taken) + _extension(image)
                    (tmp / IMAGES_DIR / name).write_bytes(image)
                    writer.writerow(_row(item, name))
                    result.exported += 1
                done += len(chunk)
                report("fetching images", done, len(ready))
        if result.written:
            _move_into_place(tmp, out, force=force)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # the partial export, or the replaced one
    return result


def _row(item: LabelledItem, path: str) -> list[str | None]:
    """The CSV row (COLUMNS). The trainer does not read product_id and image_type; they
    are filled (the item id, "front") so the file is DeepFashion's layout whole."""
    return [
        item.item_id, item.caption, path, item.gender, item.product_type, item.item_id, "front"
    ]  # fmt: skip


def _images(
    chunk: Sequence[LabelledItem], fetch: Fetch, max_pixels: int, workers: int
) -> list[bytes | ItemError]:
    """Each item's image bytes, or the ItemError that makes them unusable: fetched, then
    decoded by the worker's own decoder (a file it refuses would stop a fit midway)."""
    blobs = fetch([i.image_uri for i in chunk])
    # decode_many passes a failed fetch's ItemError through: one check covers both.
    checked = decode_many(
        {i.item_id: blobs[i.image_uri] for i in chunk},
        size=CHECK_SIZE,
        max_pixels=max_pixels,
        workers=workers,
    )
    return [
        error if isinstance(error := checked[i.item_id], ItemError) else blobs[i.image_uri]
        for i in chunk
    ]


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def _file_stem(item_id: str, taken: set[str]) -> str:
    """A file name for the item's image: the item id where it is a safe name, else the
    safe part and a hash of the id. ``taken`` holds the names given so far, lower-cased,
    so two ids that differ only in case stay apart on a case-insensitive disk too."""
    base = _UNSAFE.sub("_", item_id).strip("._")[:100] or "item"
    digest = hashlib.sha1(item_id.encode("utf-8")).hexdigest()[:10]
    stem, n = base, 0
    if stem != item_id or stem.lower() in taken:
        stem = f"{base}-{digest}"
    while stem.lower() in taken:  # only ever a deliberately colliding id
        n += 1
        stem = f"{base}-{digest}-{n}"
    taken.add(stem.lower())
    return stem


def _extension(data: bytes) -> str:
    """The extension of the formats the decoder accepts (the bytes say; a URI may not)."""
    if data.startswith(b"\x89PNG"):
        return ".png"
    if data.startswith(b"GIF8"):
        return ".gif"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return ".webp"
    return ".jpg"


def _move_into_place(tmp: Path, out: Path, *, force: bool) -> None:
    """Rename the finished export to ``out``. An absent or empty ``out`` is replaced by
    one rename; a non-empty one (``force``) by two (``out`` is missing for the instant
    between them: a rename cannot replace a non-empty folder)."""
    try:
        os.rename(tmp, out)
        return
    except OSError as e:
        if e.errno not in (errno.ENOTEMPTY, errno.EEXIST):
            raise
        if not force:  # filled while we were exporting
            raise ExportError(f"{out} is not empty; give --force to replace it") from None
    old = out.with_name(f".{out.name}.old-{uuid.uuid4().hex[:8]}")
    os.rename(out, old)
    try:
        os.rename(tmp, out)
    except OSError:
        os.rename(old, out)
        raise
    shutil.rmtree(old, ignore_errors=True)


def storage_fetch(settings: Settings) -> Fetch:
    """The worker's fetch (tagger.storage.fetch_many: its thread pool, size limit and
    error classes) with the worker's settings. The S3 client is made for the first
    ``s3://`` URI, so an embedded catalogue of local files needs no S3 settings."""
    from tagger.storage import fetch_many, make_s3_client
    from tagger.uris import is_s3

    client = None

    def fetch(uris: Sequence[str]) -> Mapping[str, bytes | ItemError]:
        nonlocal client
        if client is None and any(is_s3(u, any_case=True) for u in uris):
            client = make_s3_client(settings)
        return fetch_many(
            uris,
            s3_client=client,
            concurrency=settings.fetch_concurrency,
            max_bytes=settings.max_image_bytes,
        )

    return fetch
