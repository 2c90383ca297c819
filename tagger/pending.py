"""A job's pending items read back from the ledger in keyset pages (item-id order), so
publishing a job of any size holds one page in memory, never the whole job."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import sqlalchemy as sa
from sqlalchemy.orm import Session

from tagger.db import JobItem
from tagger.states import ItemState

# Items per page: the primary key (job_id, item_id) index hands each page out in order.
PAGE_ITEMS = 8_192


def pending_page(*, session: Session, job_id: int, after: str | None, limit: int) -> list[str]:
    """Up to ``limit`` pending item ids of the job after ``after`` (None: from the start)."""
    query = sa.select(JobItem.item_id).where(
        JobItem.job_id == job_id, JobItem.state == ItemState.PENDING
    )
    if after is not None:
        query = query.where(JobItem.item_id > after)
    return list(session.scalars(query.order_by(JobItem.item_id).limit(limit)))


def count_pending(*, session: Session, job_id: int) -> int:
    return int(
        session.scalar(
            sa.select(sa.func.count()).where(
                JobItem.job_id == job_id, JobItem.state == ItemState.PENDING
            )
        )
        or 0
    )


def page_size_for(batch_size: int) -> int:
    """A page of whole batches (about PAGE_ITEMS items), so only the job's last batch is
    short."""
    return batch_size * max(1, PAGE_ITEMS // batch_size)


def pending_batches(*, session: Session, job_id: int, batch_size: int) -> Iterator[list[str]]:
    """The job's pending items in batches of ``batch_size``, read page by page in this
    session (inside its transaction: an import not yet committed sees its own rows)."""

    def read(after: str | None, limit: int) -> list[str]:
        return pending_page(session=session, job_id=job_id, after=after, limit=limit)

    return paged_batches(read, batch_size=batch_size)


def paged_batches(
    read_page: Callable[[str | None, int], list[str]], *, batch_size: int
) -> Iterator[list[str]]:
    """Batches of ``batch_size`` from ``read_page(after, limit)`` called page after page,
    each page starting after the last id of the one before, until a short page."""
    limit = page_size_for(batch_size)
    after: str | None = None
    while True:
        page = read_page(after, limit)
        for start in range(0, len(page), batch_size):
            yield page[start : start + batch_size]
        if len(page) < limit:
            return
        after = page[-1]
