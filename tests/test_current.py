"""Current tags kept in a table: every write, re-import, activation, rollback and prune leaves
exactly the choice the old per-query window made (the active version's tag, else the newest,
among versions that are or were active), and the flags the sweep reads (items.untagged,
current rows' fresh) true to their meaning."""

from __future__ import annotations

import random
import threading
from datetime import timedelta

import pytest
import sqlalchemy as sa

from tagger.catalogue import CatalogueItem
from tagger.current import refresh_current_tags
from tagger.db import Item, Tag, current_tags, make_engine, make_session_factory, upgrade, utcnow
from tagger.importer import import_items
from tagger.registry import activate_model_version
from tagger.scoring import Prediction
from tagger.tags import prune_tags, save_batch
from tests.factories import add_model_version

VERSIONS = ("v1", "v2", "v3")

# The definition current_tags had before the table: every tag ranked per item, per query;
# since shadow roll-outs, of the versions that are or were active only (a candidate's
# shadow tags, of a version never activated, are never shown).
REFERENCE = """
SELECT item_id, model_version, gender, product_type, product_score FROM (
    SELECT t.item_id, t.model_version, t.gender, t.product_type, t.product_score,
           ROW_NUMBER() OVER (
               PARTITION BY t.item_id
               ORDER BY CASE WHEN mv.is_active THEN 0 ELSE 1 END, t.tagged_at DESC,
                        t.model_version DESC) AS rank
    FROM tags t JOIN model_versions mv ON mv.version = t.model_version
    WHERE mv.is_active OR mv.activated_at IS NOT NULL
) ranked WHERE rank = 1
"""


def _pred(rng: random.Random) -> Prediction:
    product, score = rng.choice(["Dresses", "Pants"]), round(rng.random(), 4)
    return Prediction("WOMEN", 0.9, product, score, {"product": {product: score}})


def _shown(session) -> set[tuple]:
    cols = (
        current_tags.c.item_id,
        current_tags.c.model_version,
        current_tags.c.gender,
        current_tags.c.product_type,
        current_tags.c.product_score,
    )
    return set(session.execute(sa.select(*cols)).all())


def _reference(session) -> set[tuple]:
    return set(session.execute(sa.text(REFERENCE)).all())


# What needs a tag, by definition: no tag from the active version at least as new as the
# item's last change. The sweep reads it from two flags (items.untagged, current rows not
# fresh); they must say exactly this.
STALE = """
SELECT i.item_id FROM items i WHERE NOT EXISTS (
    SELECT 1 FROM tags t JOIN model_versions mv ON mv.version = t.model_version
    WHERE t.item_id = i.item_id AND mv.is_active AND t.tagged_at >= i.updated_at)
"""
FLAGGED = """
SELECT item_id FROM items WHERE untagged
UNION SELECT item_id FROM current_tag_rows WHERE NOT fresh
"""
UNTAGGED = """
SELECT item_id FROM items i WHERE NOT EXISTS (
    SELECT 1 FROM tags t JOIN model_versions mv ON mv.version = t.model_version
    WHERE t.item_id = i.item_id AND (mv.is_active OR mv.activated_at IS NOT NULL))
"""


def _flags_hold(session) -> bool:
    def ids(sql: str) -> set[str]:
        return set(session.execute(sa.text(sql)).scalars())

    flagged_untagged = set(session.execute(sa.select(Item.item_id).where(Item.untagged)).scalars())
    return ids(FLAGGED) == ids(STALE) and flagged_untagged == ids(UNTAGGED)


def _catalogue(sessions, n: int, *, served: tuple[str, ...] = ()) -> None:
    """n items and VERSIONS, v1 active; the ``served`` ones were active before it (their
    tags may show as an item's newest), the others never were."""
    with sessions.begin() as s:
        for v in VERSIONS:
            add_model_version(s, v, activate=v in served)
        activate_model_version(session=s, version="v1")
        s.add_all([Item(item_id=f"i{k:03d}", image_uri=f"/x/{k}.jpg") for k in range(n)])


def _random_history(sessions, *, seed: int, n: int, swap_above: int | None) -> None:
    """Random batches from every version, re-imports that change images, activations,
    rollbacks and prunes, checking the table against the reference ranking, and the stale
    flags against their definition, after each step."""
    rng = random.Random(seed)
    _catalogue(sessions, n)
    for step in range(24):
        with sessions.begin() as s:
            action = rng.random()
            if action < 0.6:
                ids = rng.sample([f"i{k:03d}" for k in range(n)], rng.randint(1, n))
                preds = {i: _pred(rng) for i in ids}
                save_batch(
                    session=s,
                    job_id=None,
                    model_version=rng.choice(VERSIONS),
                    predictions=preds,
                    failures={},
                )
            elif action < 0.7:
                # A re-import that changes some images (and adds an item now and then).
                ids = rng.sample(range(n + 5), rng.randint(1, 5))
                items = [CatalogueItem(f"i{k:03d}", f"/x/{k}-{step}.jpg") for k in ids]
                import_items(session=s, items=items, source="history", batch_size=8)
            elif action < 0.9:
                activate_model_version(session=s, version=rng.choice(VERSIONS))
                # Again by the path under test (activation chose by the catalogue's size).
                refresh_current_tags(session=s, swap_above=swap_above)
            else:
                prune_tags(session=s, keep=rng.choice([1, 2]))
        with sessions() as s:
            assert _shown(s) == _reference(s), f"seed {seed}, step {step}"
            assert _flags_hold(s), f"seed {seed}, step {step}: stale flags"


@pytest.mark.parametrize("seed", range(4))
def test_random_history_matches_the_ranking_in_place(session_factory, seed):
    """Saves, activations, rollbacks and prunes keep current_tags equal to the ranking
    (refreshed in place, as a small catalogue is)."""
    _random_history(session_factory, seed=seed, n=30, swap_above=10**9)


@pytest.mark.parametrize("seed", range(2))
def test_random_history_matches_the_ranking_when_swapped(session_factory, seed):
    """The same with every refresh building the next table and swapping it in, as a large
    Postgres catalogue is refreshed."""
    _random_history(session_factory, seed=seed, n=30, swap_above=0)


def test_random_history_matches_the_ranking_on_sqlite(tmp_path):
    """The embedded database keeps the same choice."""
    url = f"sqlite:///{tmp_path / 'e.db'}"
    upgrade(url)
    _random_history(make_session_factory(make_engine(url)), seed=7, n=20, swap_above=None)


def test_a_never_active_versions_tag_is_never_shown_even_when_newest(session_factory):
    """A tag of a version never activated (a candidate's shadow tag) shows neither when it
    is written nor, as an item's newest tag, after another version's activation; the item
    it alone tags stays untagged. Once that version is activated, its tags show."""
    _catalogue(session_factory, 2)
    rng = random.Random(2)
    # v1 (active) tags i000; v3, never active, tags both items later.
    for version, ids in (("v1", ["i000"]), ("v3", ["i000", "i001"])):
        with session_factory.begin() as s:
            preds = {i: _pred(rng) for i in ids}
            save_batch(
                session=s, job_id=None, model_version=version, predictions=preds, failures={}
            )
    with session_factory() as s:
        assert {r[0]: r[1] for r in _shown(s)} == {"i000": "v1"}
        assert s.get(Item, "i001").untagged and _flags_hold(s)
    for swap_above in (10**9, 0):  # v2, which tagged nothing, is activated: newest rule
        with session_factory.begin() as s:
            activate_model_version(session=s, version="v2")
            refresh_current_tags(session=s, swap_above=swap_above)
        with session_factory() as s:
            assert {r[0]: r[1] for r in _shown(s)} == {"i000": "v1"}
            assert _shown(s) == _reference(s) and _flags_hold(s)
    with session_factory.begin() as s:
        activate_model_version(session=s, version="v3")
    with session_factory() as s:
        assert {r[0]: r[1] for r in _shown(s)} == {"i000": "v3", "i001": "v3"}
        assert not s.get(Item, "i001").untagged and _flags_hold(s)


def test_active_tag_wins_over_a_newer_one_and_newest_wins_otherwise(session_factory):
    """An older tag of the active version stays shown over a newer one of another version;
    without an active tag the newest shows; a rewrite of the shown tag shows its new
    values."""
    _catalogue(session_factory, 2, served=VERSIONS)
    rng = random.Random(1)
    # v1 (active) tags i000 only; v2, later, tags both.
    for version, ids in (("v1", ["i000"]), ("v2", ["i000", "i001"])):
        with session_factory.begin() as s:
            preds = {i: _pred(rng) for i in ids}
            save_batch(
                session=s, job_id=None, model_version=version, predictions=preds, failures={}
            )
    with session_factory() as s:
        shown = {r[0]: r[1] for r in _shown(s)}
    assert shown == {"i000": "v1", "i001": "v2"}
    fixed = Prediction("MEN", 0.7, "Pants", 0.42, {})
    with session_factory.begin() as s:
        save_batch(
            session=s, job_id=None, model_version="v1", predictions={"i000": fixed}, failures={}
        )
    with session_factory() as s:
        row = s.execute(sa.select(current_tags).where(current_tags.c.item_id == "i000")).one()
    assert (row.model_version, row.gender, row.product_score) == ("v1", "MEN", 0.42)


def test_deleting_an_item_deletes_its_current_row(session_factory):
    """Items leave current_tags with their tags (cascade), leaving no orphan rows."""
    _catalogue(session_factory, 3)
    with session_factory.begin() as s:
        preds = {f"i{k:03d}": _pred(random.Random(k)) for k in range(3)}
        save_batch(session=s, job_id=None, model_version="v1", predictions=preds, failures={})
    with session_factory.begin() as s:
        s.execute(sa.delete(Item).where(Item.item_id == "i001"))
    with session_factory() as s:
        assert {r[0] for r in _shown(s)} == {"i000", "i002"}


def test_a_shown_tag_cannot_be_deleted_behind_its_back(session_factory):
    """Deleting the tag an item shows (not through prune) is refused by the foreign key."""
    _catalogue(session_factory, 1)
    with session_factory.begin() as s:
        preds = {"i000": _pred(random.Random(0))}
        save_batch(session=s, job_id=None, model_version="v1", predictions=preds, failures={})
    with pytest.raises(sa.exc.IntegrityError), session_factory.begin() as s:
        s.execute(sa.delete(Tag).where(Tag.item_id == "i000"))


def test_swap_is_atomic_for_readers_and_writers_land_in_the_new_table(session_factory, db):
    """During a swapping activation, a reader in another connection sees every item once
    (old choice or new, never none or two), and a batch written meanwhile waits and then
    shows in the swapped-in table."""
    n = 300
    _catalogue(session_factory, n, served=VERSIONS)
    ids = [f"i{k:03d}" for k in range(n)]
    rng = random.Random(3)
    for version in ("v1", "v2"):
        with session_factory.begin() as s:
            preds = {i: _pred(rng) for i in ids[:-1]}
            save_batch(
                session=s, job_id=None, model_version=version, predictions=preds, failures={}
            )
    counts: list[tuple[int, int]] = []
    stop = threading.Event()

    def read() -> None:
        with db.connect() as conn:
            while not stop.is_set():
                row = conn.execute(
                    sa.text("SELECT count(*), count(DISTINCT item_id) FROM current_tags")
                ).one()
                counts.append(tuple(row))
                conn.rollback()

    def write() -> None:
        with session_factory.begin() as s:
            preds = {ids[-1]: _pred(rng)}
            save_batch(session=s, job_id=None, model_version="v3", predictions=preds, failures={})

    reader = threading.Thread(target=read)
    reader.start()
    with session_factory.begin() as s:
        activate_model_version(session=s, version="v2")
        refresh_current_tags(session=s, swap_above=0)
        writer = threading.Thread(target=write)
        writer.start()
        writer.join(timeout=1.0)
        assert writer.is_alive(), "a tag write went through during the swap"
    writer.join(timeout=30)
    stop.set()
    reader.join(timeout=30)
    assert counts and set(counts) == {(n - 1, n - 1)} | ({(n, n)} & set(counts))
    with session_factory() as s:
        shown = {r[0]: r[1] for r in _shown(s)}
        assert _shown(s) == _reference(s)
    assert len(shown) == n and shown[ids[-1]] == "v3"
    assert {v for i, v in shown.items() if i != ids[-1]} == {"v2"}


def test_reference_ranking_uses_tagged_at_then_version(session_factory):
    """Ties in tagged_at fall to the higher version name, as before."""
    _catalogue(session_factory, 1, served=VERSIONS)
    now = utcnow()
    with session_factory.begin() as s:
        activate_model_version(session=s, version="v3")
        for v in ("v1", "v2"):
            s.add(
                Tag(
                    item_id="i000",
                    model_version=v,
                    gender="MEN",
                    gender_score=0.5,
                    product_type="Pants",
                    product_score=0.5,
                    scores={},
                    tagged_at=now - timedelta(hours=1),
                )
            )
        s.flush()
        refresh_current_tags(session=s)
    with session_factory() as s:
        assert {r[1] for r in _shown(s)} == {"v2"} and _shown(s) == _reference(s)


def _schema(db) -> dict[str, object]:
    """current_tag_rows as the catalogue describes it: columns, indexes, constraints."""
    with db.connect() as conn:
        columns = conn.execute(
            sa.text(
                "SELECT column_name, data_type, character_maximum_length, is_nullable, "
                "column_default FROM information_schema.columns "
                "WHERE table_name = 'current_tag_rows' ORDER BY ordinal_position"
            )
        ).all()
        indexes = conn.execute(
            sa.text(
                "SELECT indexname, indexdef FROM pg_indexes "
                "WHERE tablename = 'current_tag_rows' ORDER BY 1"
            )
        ).all()
        constraints = conn.execute(
            sa.text(
                "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
                "WHERE conrelid = 'current_tag_rows'::regclass ORDER BY 1"
            )
        ).all()
    return {"columns": columns, "indexes": indexes, "constraints": constraints}


def test_swapped_table_has_the_migrated_schema():
    """The table a swap builds (CREATE TABLE AS, then keys and indexes) has exactly the
    columns, types, NOT NULLs, default, indexes and constraints the migrations made (a
    database of its own: the shared test database may have been swapped already). The
    swap's foreign keys are added NOT VALID, and say so; nothing else differs."""
    from tests.services import postgres_database

    with postgres_database() as url:
        upgrade(url)
        db = make_engine(url)
        before = _schema(db)
        sessions = make_session_factory(db)
        with sessions.begin() as s:
            add_model_version(s, "v1", activate=True)
            s.add(Item(item_id="a", image_uri="/a.jpg"))
            s.flush()
            save_batch(
                session=s,
                job_id=None,
                model_version="v1",
                predictions={"a": _pred(random.Random(0))},
                failures={},
            )
        with sessions.begin() as s:
            assert refresh_current_tags(session=s, swap_above=0) == 1
        after = _schema(db)
        db.dispose()
    valid = [(name, d.removesuffix(" NOT VALID")) for name, d in after["constraints"]]
    assert {**after, "constraints": valid} == before
    assert len(before["indexes"]) == 6 and len(before["constraints"]) == 3
