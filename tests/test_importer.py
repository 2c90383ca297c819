"""Importing: items are upserted, and only what needs a tag from the active model is queued."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from tagger.catalogue import CatalogueItem
from tagger.db import Item, Job
from tagger.exceptions import NoActiveModel
from tagger.importer import import_items
from tagger.ledger import pending_ids
from tagger.scoring import Prediction
from tagger.tags import save_batch
from tests.factories import add_model_version


def _activate(session, version="v1"):
    add_model_version(session, version, activate=True)


def _items(n, uri="s3://b/{}.jpg"):
    return [
        CatalogueItem(item_id=f"i{k}", image_uri=uri.format(k), title=f"t{k}") for k in range(n)
    ]


PRED = Prediction("WOMEN", 0.9, "Dresses", 0.8, {"gender": {}, "product": {}})


def test_first_import_queues_everything_in_batches(session_factory):
    """A new catalogue of 10 items with batch size 4 is one job in batches 4, 4, 2."""
    with session_factory.begin() as s:
        _activate(s)
        plan = import_items(session=s, items=_items(10), source="c.csv", batch_size=4)
    assert [len(b) for b in plan.batches] == [4, 4, 2]
    assert (plan.job.total, plan.job.skipped, plan.new) == (10, 0, 10)


def test_second_import_of_same_file_duplicates_nothing(session_factory):
    """Re-importing a tagged catalogue adds one job, no items, and queues no work."""
    with session_factory.begin() as s:
        _activate(s)
        first = import_items(session=s, items=_items(5), source="c.csv", batch_size=4)
        save_batch(
            session=s,
            job_id=first.job.id,
            model_version="v1",
            predictions={f"i{k}": PRED for k in range(5)},
            failures={},
        )
    with session_factory.begin() as s:
        second = import_items(session=s, items=_items(5), source="c.csv", batch_size=4)
    assert second.batches == [] and second.unchanged == 5
    with session_factory() as s:
        assert s.scalar(sa.select(sa.func.count()).select_from(Item)) == 5
        assert s.scalar(sa.select(sa.func.count()).select_from(Job)) == 2
        job = s.get(Job, second.job.id)
        assert (job.status, job.total, job.skipped) == ("finished", 0, 5)


def test_changed_image_is_queued_again(session_factory):
    """An item whose image URI changed is re-queued although it has a tag."""
    with session_factory.begin() as s:
        _activate(s)
        first = import_items(session=s, items=_items(3), source="c.csv", batch_size=10)
        save_batch(
            session=s,
            job_id=first.job.id,
            model_version="v1",
            predictions={f"i{k}": PRED for k in range(3)},
            failures={},
        )
    moved = _items(3)
    moved[1] = CatalogueItem(item_id="i1", image_uri="s3://b/new.jpg", title="t1")
    with session_factory.begin() as s:
        plan = import_items(session=s, items=moved, source="c.csv", batch_size=10)
    assert plan.batches == [["i1"]] and plan.changed == 1
    with session_factory() as s:
        assert s.get(Item, "i1").image_uri == "s3://b/new.jpg"
        ledger = pending_ids(session=s, job_id=plan.job.id)
        assert ledger == ["i1"]


def test_import_without_active_model_writes_nothing(session_factory):
    """With no active model the import is refused before any row is written."""
    with pytest.raises(NoActiveModel), session_factory.begin() as s:
        import_items(session=s, items=_items(3), source="c.csv", batch_size=4)
    with session_factory() as s:
        assert s.scalar(sa.select(sa.func.count()).select_from(Item)) == 0
