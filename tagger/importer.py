"""Importing a catalogue: upsert the items, decide what needs tagging, create the job.

Queueing the batches is the caller's business (Celery for `tagger import`, in-process
for `tagger run`): this module only writes Postgres, in the caller's transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.orm import Session

from tagger.batching import chunked
from tagger.catalogue import CatalogueItem
from tagger.db import Item, Job, Tag, insert, utcnow
from tagger.exceptions import NoActiveModel
from tagger.jobs import CHUNK, create_job
from tagger.registry import get_active_model_version
from tagger.states import JobKind


@dataclass(frozen=True)
class ImportPlan:
    job: Job
    batches: list[list[str]]
    new: int
    changed: int
    unchanged: int


def import_items(
    *,
    session: Session,
    items: Sequence[CatalogueItem],
    source: str,
    batch_size: int,
    kind: JobKind = JobKind.IMPORT,
) -> ImportPlan:
    """Upsert ``items`` and create a job over those that need a tag from the active model:
    new items, items whose image or fingerprint changed, and items the active version has
    not tagged yet. Importing the same file twice queues nothing the second time."""
    active = get_active_model_version(session=session)
    if active is None:
        raise NoActiveModel(
            "no active model version: run `tagger model register URI --activate` first"
        )
    now = utcnow()
    existing: dict[str, tuple[str, str | None, str | None]] = {}
    tagged: set[str] = set()
    ids = [i.item_id for i in items]
    for chunk in chunked(ids, CHUNK):
        for row in session.execute(
            sa.select(Item.item_id, Item.image_uri, Item.fingerprint, Item.title).where(
                Item.item_id.in_(chunk)
            )
        ):
            existing[row.item_id] = (row.image_uri, row.fingerprint, row.title)
        tagged.update(
            session.scalars(
                sa.select(Tag.item_id).where(
                    Tag.model_version == active.version, Tag.item_id.in_(chunk)
                )
            )
        )

    new, changed, rows, to_tag = 0, 0, [], []
    for item in items:
        before = existing.get(item.item_id)
        image_changed = before is not None and (
            before[0] != item.image_uri
            or (item.fingerprint is not None and before[1] != item.fingerprint)
        )
        if before is None:
            new += 1
        elif image_changed or before[2] != item.title:
            changed += 1
        if before is None or image_changed or item.item_id not in tagged:
            to_tag.append(item.item_id)
        if before is None or image_changed or before[2] != item.title:
            rows.append(
                {
                    "item_id": item.item_id,
                    "image_uri": item.image_uri,
                    "title": item.title,
                    "fingerprint": item.fingerprint,
                    "created_at": now,
                    "updated_at": now,
                }
            )

    if rows:
        stmt = insert(session, Item)
        stmt = stmt.on_conflict_do_update(
            index_elements=[Item.item_id],
            set_={
                "image_uri": stmt.excluded.image_uri,
                "title": stmt.excluded.title,
                "fingerprint": stmt.excluded.fingerprint,
                "updated_at": stmt.excluded.updated_at,
            },
        )
        for chunk in chunked(sorted(rows, key=lambda r: r["item_id"]), CHUNK):
            session.execute(stmt, chunk)

    job = create_job(
        session=session,
        kind=kind,
        source=source,
        item_ids=to_tag,
        batch_size=batch_size,
        skipped=len(items) - len(to_tag),
    )
    return ImportPlan(
        job=job,
        batches=list(chunked(to_tag, batch_size)),
        new=new,
        changed=changed,
        unchanged=len(items) - new - changed,
    )
