"""Deliveries: the ledger's count of how often a batch of a job ran, and how often it died.

A batch is delivered at least once. Each delivery is counted on its items' ``job_items``
rows before the batch's risky work and marked ended after it; a mark still set at the
next delivery means the previous one died (its process was killed, or cut off by the
time limit). The task splits a batch that keeps dying (docs/architecture.md, "Failure
semantics")."""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.orm import Session

from tagger.batching import chunked
from tagger.db import JobItem, insert, utcnow
from tagger.jobs import CHUNK
from tagger.states import ItemState


def start_delivery(*, session: Session, job_id: int, item_ids: Sequence[str]) -> dict[str, int]:
    """Count a delivery of a batch that is starting; returns deaths per pending item.

    Each pending item's ``attempts`` goes up by one; where the previous delivery never
    finished (``started_at`` still set: its process was killed, or cut off by the time
    limit) ``deaths`` goes up too. Items no longer pending are left alone. The caller
    commits this before the batch's risky work, so the count survives the process.
    """
    now = utcnow()
    deaths: dict[str, int] = {}
    for chunk in chunked(sorted(set(item_ids)), CHUNK):
        # The first delivery writes the item's row; later ones count on it.
        rows = [
            {
                "job_id": job_id,
                "item_id": i,
                "state": ItemState.PENDING,
                "updated_at": now,
                "attempts": 1,
                "deaths": 0,
                "started_at": now,
            }
            for i in chunk
        ]
        statement = insert(session, JobItem).values(rows)
        statement = statement.on_conflict_do_update(
            index_elements=[JobItem.job_id, JobItem.item_id],
            set_={
                "attempts": JobItem.attempts + 1,
                "deaths": JobItem.deaths + sa.case((JobItem.started_at.is_not(None), 1), else_=0),
                "started_at": now,
            },
            where=JobItem.state == ItemState.PENDING,
        ).returning(JobItem.item_id, JobItem.deaths)
        deaths.update({item_id: n for item_id, n in session.execute(statement)})
    return deaths


def end_delivery(
    *, session: Session, job_id: int, item_ids: Sequence[str], forget_deaths: bool = False
) -> None:
    """The delivery of these items ended without dying: clear the in-flight mark.

    ``forget_deaths`` also zeroes the death count: used when a batch that kept dying is
    split, so each half gets its own ``max_batch_deaths`` tries.
    """
    values: dict[str, object] = {"started_at": None}
    if forget_deaths:
        values["deaths"] = 0
    for chunk in chunked(sorted(set(item_ids)), CHUNK):
        session.execute(
            sa.update(JobItem)
            .where(JobItem.job_id == job_id, JobItem.item_id.in_(chunk))
            .values(**values)
        )


def delivery_counts(*, session: Session, job_id: int) -> dict[str, int]:
    """Items whose batch was delivered more than once, and items whose batch died at least
    once (worker killed or cut off) without yet being given up on."""
    redelivered, died = session.execute(
        sa.select(
            sa.func.count().filter(JobItem.attempts > 1),
            sa.func.count().filter(JobItem.deaths > 0),
        ).where(JobItem.job_id == job_id)
    ).one()
    return {"redelivered_items": int(redelivered), "died_items": int(died)}
