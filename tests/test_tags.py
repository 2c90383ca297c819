"""Saving a batch is an idempotent upsert; queries filter the current tags."""

from __future__ import annotations

import sqlalchemy as sa

from tagger.db import Failure, Tag
from tagger.exceptions import CorruptImage
from tagger.scoring import Prediction
from tagger.tags import TagQuery, iter_tags, query_tags, save_batch
from tests.factories import add_model_version, make_job


def _pred(gender, gs, product, ps):
    return Prediction(gender, gs, product, ps, {"gender": {gender: gs}, "product": {product: ps}})


def _setup(session_factory, n=4):
    return make_job(session_factory, n, batch_size=n, active_version="v1")


def _count(session_factory, model):
    with session_factory() as s:
        return s.scalar(sa.select(sa.func.count()).select_from(model))


def test_saving_the_same_batch_twice_leaves_one_row_per_item(session_factory):
    """A re-delivered batch upserts: one tag row per (item, version), one failure per item."""
    job_id = _setup(session_factory)
    preds = {"i0": _pred("WOMEN", 0.9, "Dresses", 0.95), "i1": _pred("MEN", 0.8, "Pants", 0.7)}
    fails = {"i2": CorruptImage("truncated")}
    for _ in range(2):
        with session_factory.begin() as s:
            save_batch(
                session=s, job_id=job_id, model_version="v1", predictions=preds, failures=fails
            )
    assert _count(session_factory, Tag) == 2
    assert _count(session_factory, Failure) == 1
    with session_factory() as s:
        failure = s.get(Failure, "i2")
        assert (failure.reason, failure.attempts) == ("corrupt_image", 2)


def test_tagging_a_failed_item_clears_its_failure(session_factory):
    """Once an item is tagged, its failure row is gone."""
    job_id = _setup(session_factory)
    with session_factory.begin() as s:
        save_batch(
            session=s,
            job_id=job_id,
            model_version="v1",
            predictions={},
            failures={"i0": CorruptImage("x")},
        )
    with session_factory.begin() as s:
        save_batch(
            session=s,
            job_id=job_id,
            model_version="v1",
            predictions={"i0": _pred("MEN", 0.6, "Pants", 0.6)},
            failures={},
        )
    assert _count(session_factory, Failure) == 0


def test_query_filters_by_labels_and_score(session_factory):
    """Gender, product type and min score filter the current tags."""
    job_id = _setup(session_factory)
    with session_factory.begin() as s:
        save_batch(
            session=s,
            job_id=job_id,
            model_version="v1",
            failures={},
            predictions={
                "i0": _pred("WOMEN", 0.99, "Dresses", 0.95),
                "i1": _pred("WOMEN", 0.90, "Dresses", 0.50),
                "i2": _pred("MEN", 0.97, "Pants", 0.91),
                "i3": _pred("WOMEN", 0.55, "Pants", 0.85),
            },
        )
    with session_factory() as s:

        def ids(**kw):
            return [r["item_id"] for r in query_tags(session=s, query=TagQuery(**kw))]

        assert ids(product_type="Dresses", gender="WOMEN", min_score=0.8) == ["i0"]
        assert ids(gender="WOMEN", min_score=0.8) == ["i0", "i1"]
        assert ids(min_score=0.9) == ["i0", "i2"]
        assert ids(item_id="i3") == ["i3"]
        assert ids(job_id=job_id, limit=2) == ["i0", "i1"]
        assert ids(model_version="v1", product_type="Pants") == ["i2", "i3"]
        assert ids(job_id=job_id + 1) == []


def test_prune_keeps_each_items_current_tag_and_the_newest_others(session_factory):
    """prune --keep 2 leaves at most two rows per item, always including the current tag;
    a never-active version's tag (a shadow tag), newest of all, ranks last."""
    from datetime import timedelta

    from tagger.current import refresh_current_tags
    from tagger.db import utcnow
    from tagger.tags import prune_tags

    _setup(session_factory, n=2)
    now = utcnow()
    with session_factory.begin() as s:
        for name in ("v0", "v2", "v3", "cand"):
            # all but the candidate were active once, before v1
            add_model_version(s, name).activated_at = None if name == "cand" else now
        # i0: tagged by five versions; the active v1 is the oldest tag of all.
        for age, version in enumerate(["cand", "v3", "v2", "v0", "v1"]):
            s.add(
                Tag(
                    item_id="i0",
                    model_version=version,
                    gender="MEN",
                    gender_score=0.5,
                    product_type="Pants",
                    product_score=0.5,
                    scores={},
                    tagged_at=now - timedelta(hours=age),
                )
            )
        # i1: only an old version's tag, its current one.
        s.add(
            Tag(
                item_id="i1",
                model_version="v0",
                gender="MEN",
                gender_score=0.5,
                product_type="Pants",
                product_score=0.5,
                scores={},
                tagged_at=now,
            )
        )
        s.flush()
        # Written around save_batch: choose the current tags as an activation would.
        refresh_current_tags(session=s)
    with session_factory.begin() as s:
        assert prune_tags(session=s, keep=2) == 3
    with session_factory() as s:
        left = sorted(s.execute(sa.select(Tag.item_id, Tag.model_version)).all())
        current = query_tags(session=s, query=TagQuery())
    assert left == [("i0", "v1"), ("i0", "v3"), ("i1", "v0")]
    assert [(r["item_id"], r["model_version"]) for r in current] == [("i0", "v1"), ("i1", "v0")]


def test_query_by_many_item_ids_spans_chunks(session_factory):
    """An item id list longer than one IN chunk returns every matching tag, in order."""
    from tagger.jobs import CHUNK

    n = CHUNK + 20
    job_id = _setup(session_factory, n=n)
    with session_factory.begin() as s:
        preds = {f"i{k}": _pred("MEN", 0.9, "Pants", 0.9) for k in range(0, n, 2)}
        save_batch(session=s, job_id=job_id, model_version="v1", predictions=preds, failures={})
    wanted = (*(f"i{k}" for k in range(n)), "nope")
    with session_factory() as s:
        rows = query_tags(session=s, query=TagQuery(item_ids=wanted))
        limited = query_tags(session=s, query=TagQuery(item_ids=wanted, limit=3))
    assert [r["item_id"] for r in rows] == sorted(preds)
    assert [r["item_id"] for r in limited] == sorted(preds)[:3]


def test_keyset_pages_cover_every_row_once(session_factory):
    """Pages of 3 with ``after`` = the last id of the previous page, fetched through the
    streaming iterator in chunks smaller than a page, give every tag once, in order."""
    n = 10
    job_id = _setup(session_factory, n=n)
    with session_factory.begin() as s:
        save_batch(
            session=s,
            job_id=job_id,
            model_version="v1",
            failures={},
            predictions={f"i{k}": _pred("MEN", 0.9, "Pants", 0.8) for k in range(n)},
        )
    seen, after = [], None
    with session_factory() as s:
        while True:
            query = TagQuery(limit=3, after=after)
            page = [r["item_id"] for r in iter_tags(session=s, query=query, chunk_rows=2)]
            if not page:
                break
            seen += page
            after = page[-1]
    assert seen == sorted(f"i{k}" for k in range(n))
