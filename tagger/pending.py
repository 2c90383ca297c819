"""A job's batches read back from the ledger (``job_batches``) a page of batch rows at a
time, so publishing a job of any size holds one page in memory, never the whole job.

A first publish sends the batches as the planner wrote them; a resume sends only the items
still pending, packed again into full batches."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager

from sqlalchemy.orm import Session

from tagger.db import Job
from tagger.ledger import batch_pages, rebatch, session_pages


def count_pending(*, session: Session, job_id: int) -> int:
    """The job's items not yet settled, from its counters (which add up by construction:
    total = done + failed + moved + pending)."""
    job = session.get(Job, job_id)
    if job is None:
        return 0
    return max(0, job.total - job.done - job.failed - job.moved)


def pending_batches(*, session: Session, job_id: int, batch_size: int) -> Iterator[list[str]]:
    """The job's pending items in batches of ``batch_size``, read in this session (inside
    its transaction: an import not yet committed sees its own rows)."""
    return rebatch(batch_pages(session=session, job_id=job_id, pending_only=True), batch_size)


def stream_batches(
    sessions: Callable[[], AbstractContextManager[Session]],
    *,
    job_id: int,
    batch_size: int,
    pending_only: bool,
    page: int | None = None,
) -> Iterator[list[str]]:
    """The job's batches, each page of batch rows read in a short session of its own (no
    transaction held open while the caller speaks to Redis). Without ``pending_only`` the
    batches as written; with it, the pending items packed into batches of ``batch_size``."""

    pages = session_pages(sessions, job_id=job_id, pending_only=pending_only, page=page)
    return rebatch(pages, batch_size) if pending_only else _flat(pages)


def _flat(pages: Iterator[list[list[str]]]) -> Iterator[list[str]]:
    for batches in pages:
        yield from batches
