"""Writing a batch's results and querying tags."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from tagger.batching import chunked
from tagger.current import note_new_tags
from tagger.db import (
    CurrentTagRow,
    Failure,
    ModelVersion,
    Tag,
    current_tags,
    insert,
    utcnow,
)
from tagger.exceptions import ItemError
from tagger.jobs import CHUNK, record_outcomes, shadow_version
from tagger.ledger import member_ids
from tagger.scoring import Prediction

log = logging.getLogger(__name__)


def save_batch(
    *,
    session: Session,
    job_id: int | None,
    model_version: str,
    predictions: Mapping[str, Prediction],
    failures: Mapping[str, ItemError],
    shadow: bool | None = None,
) -> None:
    """Upsert tags and failures for one batch and move the job's counters, in the caller's
    transaction. Rows are sorted by key so concurrent batches lock in the same order (no
    deadlocks) and de-duplicated (no "cannot affect row a second time").

    A shadow job's batch (``tagger model compare``: tagger.jobs.shadow_version) writes its
    tags and its ledger only: no current row changes, ``items.untagged`` stays as it was,
    and the ``failures`` table is not touched. That table drives the nightly sweep's
    retries (attempts, back-off, "still failing" since the last change), which are about
    the active version's tagging; a candidate failing on an image, or tagging one that had
    failed, says nothing about those. Its failed items are settled as ``failed`` in the
    job's ledger (``job_items.state`` and ``reason``, counted in ``jobs.failed``:
    `tagger jobs ID`), and their messages go to the worker's log."""
    now = utcnow()
    if shadow is None:  # the caller did not read the job already: read it here
        shadow = job_id is not None and shadow_version(session=session, job_id=job_id) is not None
    if shadow:
        _log_shadow_failures(job_id, failures)
    if predictions:
        stmt = insert(session, Tag)
        stmt = stmt.on_conflict_do_update(
            index_elements=[Tag.item_id, Tag.model_version],
            set_={
                "gender": stmt.excluded.gender,
                "gender_score": stmt.excluded.gender_score,
                "product_type": stmt.excluded.product_type,
                "product_score": stmt.excluded.product_score,
                "scores": stmt.excluded.scores,
                "tagged_at": stmt.excluded.tagged_at,
                "product_margin": stmt.excluded.product_margin,
            },
        )
        rows = [
            {
                "item_id": item_id,
                "model_version": model_version,
                "gender": p.gender,
                "gender_score": p.gender_score,
                "product_type": p.product_type,
                "product_score": p.product_score,
                "scores": p.scores,
                "tagged_at": now,
                "product_margin": p.product_margin,
            }
            for item_id, p in sorted(predictions.items())
        ]
        for chunk in chunked(rows, CHUNK):
            session.execute(stmt, chunk)
    if predictions and not shadow:
        note_new_tags(session=session, model_version=model_version, item_ids=list(predictions))
        # A tagged item is no longer broken.
        for chunk in chunked(sorted(predictions), CHUNK):
            session.execute(sa.delete(Failure).where(Failure.item_id.in_(chunk)))
    if failures and not shadow:
        stmt = insert(session, Failure)
        stmt = stmt.on_conflict_do_update(
            index_elements=[Failure.item_id],
            set_={
                "job_id": stmt.excluded.job_id,
                "reason": stmt.excluded.reason,
                "message": stmt.excluded.message,
                "attempts": Failure.attempts + 1,
                "last_seen": stmt.excluded.last_seen,
            },
        )
        rows = [
            {
                "item_id": item_id,
                "job_id": job_id,
                "reason": err.reason,
                "message": str(err)[:2000],
                "attempts": 1,
                "first_seen": now,
                "last_seen": now,
            }
            for item_id, err in sorted(failures.items())
        ]
        for chunk in chunked(rows, CHUNK):
            session.execute(stmt, chunk)
    if job_id is not None:
        record_outcomes(
            session=session,
            job_id=job_id,
            tagged=list(predictions),
            failed={item_id: err.reason for item_id, err in failures.items()},
        )


def _log_shadow_failures(job_id: int | None, failures: Mapping[str, ItemError]) -> None:
    for item_id, err in sorted(failures.items()):
        log.warning("shadow job %s: item %s failed (%s): %s", job_id, item_id, err.reason, err)


@dataclass(frozen=True)
class TagQuery:
    gender: str | None = None
    product_type: str | None = None
    min_score: float | None = None
    item_id: str | None = None
    item_ids: tuple[str, ...] | None = None
    job_id: int | None = None
    model_version: str | None = None
    since: datetime | None = None
    limit: int | None = None
    #: keyset paging: only items whose id sorts after this one (the last of a page)
    after: str | None = None
    #: "human": items showing a person's label; "model": the others (current tags only)
    source: str | None = None


def query_tags(*, session: Session, query: TagQuery) -> list[dict[str, Any]]:
    """Current tags (the ``current_tags`` view), or one version's tags when it is named,
    in item-id order.

    ``min_score`` applies to the score of each label filtered on (gender and/or product
    type); with neither, to the product-type score. ``after`` starts after that item id.
    """
    if query.item_ids is None:
        return list(iter_tags(session=session, query=query))
    stmt, c = _tag_select(query, session=session)
    # Chunked: a catalogue's worth of ids would exceed driver parameter limits.
    rows: list[dict[str, Any]] = []
    for chunk in chunked(sorted(set(query.item_ids)), CHUNK):
        part = stmt.where(c.item_id.in_(chunk)).order_by(c.item_id)
        rows += [dict(row._mapping) for row in session.execute(part)]
        if query.limit and len(rows) >= query.limit:
            return rows[: query.limit]
    return rows


def iter_tags(
    *, session: Session, query: TagQuery, chunk_rows: int = 1000
) -> Iterator[dict[str, Any]]:
    """``query_tags``'s rows one by one, fetched ``chunk_rows`` at a time (a server-side
    cursor on Postgres), so a full export holds one chunk in memory, not the catalogue."""
    if query.item_ids is not None:
        yield from query_tags(session=session, query=query)
        return
    stmt, c = _tag_select(query, session=session)
    stmt = stmt.order_by(c.item_id)
    if query.limit:
        stmt = stmt.limit(query.limit)
    result = session.execute(stmt.execution_options(yield_per=chunk_rows))
    for row in result:
        yield dict(row._mapping)


def _tag_select(query: TagQuery, *, session: Session):
    src = Tag.__table__ if query.model_version else current_tags
    c = src.c
    stmt = sa.select(
        c.item_id,
        c.model_version,
        c.gender,
        c.gender_score,
        c.product_type,
        c.product_score,
        c.product_margin,
        c.tagged_at,
        # A version's own tags are all model output: their source is the version.
        c.model_version.label("source") if query.model_version else c.source,
    )
    if query.model_version:
        stmt = stmt.where(c.model_version == query.model_version)
    if query.after is not None:
        stmt = stmt.where(c.item_id > query.after)
    if query.gender:
        stmt = stmt.where(c.gender == query.gender)
    if query.product_type:
        stmt = stmt.where(c.product_type == query.product_type)
    if query.min_score is not None:
        if query.gender:
            stmt = stmt.where(c.gender_score >= query.min_score)
        if query.product_type or not query.gender:
            stmt = stmt.where(c.product_score >= query.min_score)
    if query.item_id:
        stmt = stmt.where(c.item_id == query.item_id)
    if query.job_id is not None:
        in_job = member_ids(session=session, job_id=query.job_id)
        members = in_job.columns(sa.column("item_id", sa.String)).subquery("members")
        stmt = stmt.where(c.item_id.in_(sa.select(members.c.item_id)))
    if query.since is not None:
        stmt = stmt.where(c.tagged_at >= query.since)
    if query.source is not None:
        if query.model_version:
            raise ValueError("a version's own tags have no source: drop one of the two")
        stmt = stmt.where(source_condition(c.item_id, query.source))
    return stmt, c


def source_condition(item_id: sa.ColumnElement, source: str) -> sa.ColumnElement[bool]:
    """``human``: the items whose current row shows a person's label; ``model``: the
    others. Through the partial index of labelled rows, not the view's computed column."""
    labelled = sa.select(CurrentTagRow.item_id).where(CurrentTagRow.human)
    if source == "human":
        return item_id.in_(labelled)
    if source == "model":
        return item_id.not_in(labelled)
    raise ValueError(f"source must be 'human' or 'model', got {source!r}")


def prune_tags(*, session: Session, keep: int) -> int:
    """Delete all but each item's ``keep`` most relevant tags; returns rows deleted.

    Tags rank as the current_tags view ranks them (active version first, then newest,
    among versions that have been active), so with ``keep >= 1`` every item keeps the tag
    it currently shows; tags of versions never active (a candidate's shadow tags, which
    are never shown) rank after all of those, so they never cost an item the tag of an
    earlier version it would show after a rollback.
    """
    if keep < 1:
        raise ValueError("keep must be at least 1: an item's current tag is never pruned")
    if keep == 1:
        # Each item keeps exactly the tag it shows: one anti-join, no ranking.
        shown = sa.exists().where(
            CurrentTagRow.item_id == Tag.item_id, CurrentTagRow.model_version == Tag.model_version
        )
        return session.execute(
            sa.delete(Tag).where(~shown).execution_options(synchronize_session=False)
        ).rowcount
    rank = (
        sa.func.row_number()
        .over(
            partition_by=Tag.item_id,
            order_by=(
                sa.case(
                    (ModelVersion.is_active.is_(True), 0),
                    (ModelVersion.activated_at.is_not(None), 1),
                    else_=2,
                ),
                Tag.tagged_at.desc(),
                Tag.model_version.desc(),
            ),
        )
        .label("rank")
    )
    ranked = (
        sa.select(Tag.item_id, Tag.model_version, rank)
        .join(ModelVersion, ModelVersion.version == Tag.model_version)
        .subquery()
    )
    doomed = sa.select(ranked.c.item_id, ranked.c.model_version).where(ranked.c.rank > keep)
    result = session.execute(
        sa.delete(Tag)
        .where(sa.tuple_(Tag.item_id, Tag.model_version).in_(doomed))
        .execution_options(synchronize_session=False)
    )
    return result.rowcount
