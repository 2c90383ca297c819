"""Importing a catalogue: stage its rows, upsert the items, decide what needs tagging,
create the job and its ledger rows.

Rows are streamed into a temporary staging table in chunks (tagger.staging) and applied
with set-based SQL, so memory stays flat however long the catalogue is. Everything runs in
the caller's transaction: a malformed row, an id given twice or no active model refuses
the whole catalogue with nothing written. Queueing the batches is the caller's business
(Celery for `tagger import`, in-process for `tagger run`), after the commit.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy.orm import Session

from tagger.catalogue import CatalogueItem, CatalogueRow
from tagger.db import Job, utcnow
from tagger.exceptions import CatalogueError, NoActiveModel
from tagger.pending import pending_batches
from tagger.registry import get_active_model_version
from tagger.sources import CatalogueSource, ListSource, Staged
from tagger.staging import (
    CHUNK_ROWS,
    apply_plan,
    create_staging,
    drop_staging,
    find_duplicate,
    plan_staged,
    stage_stream,
)
from tagger.states import JobKind, JobStatus

if TYPE_CHECKING:
    from tagger.progress import OnProgress

log = logging.getLogger(__name__)


@contextmanager
def _phase(timings: dict[str, float], name: str) -> Iterator[None]:
    # Each step's wall time, logged at the end (INFO): where a large import spends it is
    # what benchmarks/import_scale.py prints side by side.
    started = time.perf_counter()
    try:
        yield
    finally:
        timings[name] = time.perf_counter() - started


@dataclass(frozen=True)
class Imported:
    """What an import wrote: the job (its ``total`` is the items to tag) and the counts."""

    job: Job
    items: int  # catalogue rows read
    new: int
    changed: int
    unchanged: int


@dataclass(frozen=True)
class ImportPlan:
    job: Job
    batches: list[list[str]]
    new: int
    changed: int
    unchanged: int


def import_catalogue(
    *,
    session: Session,
    source: CatalogueSource,
    batch_size: int,
    kind: JobKind = JobKind.IMPORT,
    on_read: OnProgress | None = None,
) -> Imported:
    """Stage every row of ``source``, then upsert the new and changed items and create a
    job over those that need a tag from the active model: new items, items whose image or
    fingerprint changed, and items the active version has not tagged yet. Importing the
    same catalogue twice queues nothing the second time.

    ``on_read`` hears ("reading SOURCE", position, size) before the first chunk and after
    each one (bytes of a file; images listed, size 0, for a folder or prefix).
    """
    active = get_active_model_version(session=session)
    if active is None:
        raise NoActiveModel(
            "no active model version: run `tagger model register URI --activate` first"
        )
    timings: dict[str, float] = {}
    create_staging(session=session)
    with _phase(timings, "read+check+copy"):
        staged = _stage(session=session, source=source, on_read=on_read)
    if staged == 0 and (empty := source.empty()) is not None:
        raise empty
    with _phase(timings, "duplicates"):
        _refuse_duplicates(session=session, source=source)
    with _phase(timings, "plan"):
        counts = plan_staged(session=session)
    now = utcnow()
    job = _create_job(
        session=session,
        kind=kind,
        source=source.label,
        total=counts.to_tag,
        skipped=counts.items - counts.to_tag,
        batch_size=batch_size,
        now=now,
    )
    apply_plan(session=session, job_id=job.id, batch_size=batch_size, now=now, timings=timings)
    drop_staging(session=session)
    log.info(
        "import of %s: %s",
        source.label,
        ", ".join(f"{name} {seconds:.2f} s" for name, seconds in timings.items()),
    )
    return Imported(
        job=job,
        items=counts.items,
        new=counts.new,
        changed=counts.changed,
        unchanged=counts.items - counts.new - counts.changed,
    )


def import_items(
    *,
    session: Session,
    items: Sequence[CatalogueItem],
    source: str,
    batch_size: int,
    kind: JobKind = JobKind.IMPORT,
) -> ImportPlan:
    """``import_catalogue`` over items already in memory, with the job's batches (item-id
    order) read back from its ledger: for small catalogues, the embedded mode and tests."""
    done = import_catalogue(
        session=session, source=ListSource(items, label=source), batch_size=batch_size, kind=kind
    )
    batches = list(pending_batches(session=session, job_id=done.job.id, batch_size=batch_size))
    return ImportPlan(
        job=done.job,
        batches=batches,
        new=done.new,
        changed=done.changed,
        unchanged=done.unchanged,
    )


def _stage(*, session: Session, source: CatalogueSource, on_read: OnProgress | None) -> int:
    description = f"reading {source.label}"

    def tick() -> None:
        if on_read is not None:
            on_read(description, source.position, source.size)

    failure: list[CatalogueError] = []

    def rows() -> Iterator[CatalogueRow]:
        # A bad row ends the stream where it is, so the rows before it are staged and the
        # COPY completes (an error inside it would abort the transaction).
        try:
            yield from source
        except CatalogueError as exc:
            failure.append(exc)

    if on_read is not None:
        on_read(description, 0, source.size)
    staged = stage_stream(session=session, rows=rows(), chunk_rows=CHUNK_ROWS, on_chunk=tick)
    if failure:
        # An id given twice before the bad row is the first error in the file, and is
        # reported instead (as reading the file top to bottom would have).
        _refuse_duplicates(session=session, source=source)
        raise failure[0]
    tick()
    return staged


def _refuse_duplicates(*, session: Session, source: CatalogueSource) -> None:
    twice = find_duplicate(session=session)
    if twice is not None:
        raise source.duplicate(
            twice.item_id,
            first=Staged(twice.first_line, twice.first_uri),
            again=Staged(twice.line, twice.uri),
        )


def _create_job(
    *,
    session: Session,
    kind: JobKind,
    source: str,
    total: int,
    skipped: int,
    batch_size: int,
    now: datetime,
) -> Job:
    """The job row alone, as tagger.jobs.create_job makes it: its ledger rows are written
    by apply_plan with one INSERT ... SELECT instead of a list of ids."""
    job = Job(
        kind=kind,
        source=source,
        status=JobStatus.QUEUED if total else JobStatus.FINISHED,
        total=total,
        skipped=skipped,
        batch_size=batch_size,
        created_at=now,
        updated_at=now,
        finished_at=None if total else now,
    )
    session.add(job)
    session.flush()
    return job
