"""Schema: Alembic builds it on Postgres and SQLite alike; the current_tags view picks the
active model's tag, else the newest one (of the versions that were ever active)."""

from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa

from tagger.current import refresh_current_tags
from tagger.db import (
    Item,
    ModelVersion,
    Tag,
    current_tags,
    make_engine,
    make_session_factory,
    upgrade,
    utcnow,
)

TABLES = {"items", "model_versions", "tags", "current_tag_rows", "jobs", "job_items", "failures"}


def _version(name: str, active: bool = False) -> ModelVersion:
    # Every version here was active at some point (an old one was rolled out before the
    # active one); a never-activated version's tags are never shown (tests/test_shadow.py).
    return ModelVersion(
        version=name,
        artifact_uri=f"/models/{name}",
        gender_labels=["MEN", "WOMEN"],
        product_labels=["Dresses", "Pants"],
        image_size=32,
        uses_text=False,
        is_active=active,
        activated_at=utcnow(),
    )


def _tag(item: str, version: str, product: str, age_s: int) -> Tag:
    return Tag(
        item_id=item,
        model_version=version,
        gender="WOMEN",
        gender_score=0.9,
        product_type=product,
        product_score=0.8,
        scores={"product": {product: 0.8}},
        tagged_at=utcnow() - timedelta(seconds=age_s),
    )


def _check_view(engine: sa.Engine) -> None:
    sessions = make_session_factory(engine)
    with sessions.begin() as s:
        s.add_all([_version("v1"), _version("v2", active=True)])
        s.add_all([Item(item_id=i, image_uri=f"/img/{i}.jpg") for i in ("a", "b")])
        s.flush()
        # a: tagged by both; the active v2 wins although v1's tag is newer.
        s.add_all([_tag("a", "v1", "Pants", 0), _tag("a", "v2", "Dresses", 60)])
        # b: only the old v1 tag; it still shows (a roll-out never blanks the catalogue).
        s.add(_tag("b", "v1", "Pants", 30))
        s.flush()
        # Written around save_batch: choose the current tags as an activation would.
        refresh_current_tags(session=s)
    with sessions() as s:
        rows = {r.item_id: r for r in s.execute(sa.select(current_tags))}
    assert set(rows) == {"a", "b"}
    assert (rows["a"].model_version, rows["a"].product_type) == ("v2", "Dresses")
    assert bool(rows["a"].is_active_model) is True
    assert (rows["b"].model_version, bool(rows["b"].is_active_model)) == ("v1", False)


def test_postgres_schema_has_every_table_and_the_view(db):
    """`alembic upgrade head` on Postgres creates the tables and the current_tags view."""
    inspector = sa.inspect(db)
    assert set(inspector.get_table_names()) >= TABLES
    assert "current_tags" in inspector.get_view_names()


def test_current_tags_prefers_active_model_on_postgres(db):
    """On Postgres, the view shows the active version's tag, else the newest tag."""
    _check_view(db)


def test_sqlite_schema_and_view_work(tmp_path):
    """The same migrations build a working schema and view on SQLite."""
    url = f"sqlite:///{tmp_path / 't.db'}"
    upgrade(url)
    engine = make_engine(url)
    assert set(sa.inspect(engine).get_table_names()) >= TABLES
    _check_view(engine)


def test_only_one_version_can_be_active(db):
    """A second active model version violates the unique partial index."""
    sessions = make_session_factory(db)
    with pytest.raises(sa.exc.IntegrityError), sessions.begin() as s:
        s.add_all([_version("v1", active=True), _version("v2", active=True)])


def _ledger(engine: sa.Engine) -> None:
    from tagger.db import Job, JobItem

    sessions = make_session_factory(engine)
    with sessions.begin() as s:
        s.add_all([Item(item_id=i, image_uri=f"/img/{i}.jpg") for i in ("a", "b", "c")])
        s.add_all([Job(id=1, kind="import", batch_size=2), Job(id=2, kind="import", batch_size=2)])
        s.flush()
        s.add_all([JobItem(job_id=j, item_id=i) for j in (1, 2) for i in ("a", "b", "c")])
    with sessions.begin() as s:
        s.execute(sa.delete(Item).where(Item.item_id.in_(["a", "b"])))
        s.execute(sa.delete(Job).where(Job.id == 2))
    with sessions() as s:
        left = s.execute(sa.select(JobItem.job_id, JobItem.item_id)).all()
    assert left == [(1, "c")]


def test_deleting_items_or_jobs_deletes_their_ledger_rows_on_postgres(db):
    """Deleted items and jobs take their job_items rows with them (statement-level
    triggers on Postgres, where the ledger has no per-row foreign keys)."""
    _ledger(db)


def test_deleting_items_or_jobs_deletes_their_ledger_rows_on_sqlite(tmp_path):
    """The same on SQLite, through its foreign keys."""
    url = f"sqlite:///{tmp_path / 'l.db'}"
    upgrade(url)
    _ledger(make_engine(url))


# A catalogue as revision 0005 held it: "fresh" (active tag newer than its change),
# "changed" (active tag older than its change), "old" (another version's tag only) and
# "new" (no tag).
BEFORE_FLAGS = [
    "INSERT INTO model_versions (version, artifact_uri, gender_labels, product_labels, "
    "image_size, uses_text, is_active) VALUES "
    "('v1', '/m/v1', '[]', '[]', 32, false, false), ('v2', '/m/v2', '[]', '[]', 32, false, true)",
    "INSERT INTO items (item_id, image_uri, created_at, updated_at) VALUES "
    "('fresh', '/a', :t0, :t0), ('changed', '/b', :t0, :t2), ('old', '/c', :t0, :t0), "
    "('new', '/d', :t0, :t0)",
    "INSERT INTO tags (item_id, model_version, gender, gender_score, product_type, "
    "product_score, scores, tagged_at) VALUES "
    "('fresh', 'v2', 'MEN', 0.9, 'Dresses', 0.9, '{}', :t1), "
    "('changed', 'v2', 'MEN', 0.9, 'Dresses', 0.9, '{}', :t1), "
    "('old', 'v1', 'MEN', 0.9, 'Dresses', 0.9, '{}', :t1)",
    "INSERT INTO current_tag_rows (item_id, model_version, gender, gender_score, "
    "product_type, product_score, tagged_at) "
    "SELECT item_id, model_version, gender, gender_score, product_type, product_score, "
    "tagged_at FROM tags",
]


def _migrate_flags(url: str) -> None:
    upgrade(url, "0005")
    t0 = utcnow() - timedelta(hours=3)
    engine = make_engine(url)
    with engine.begin() as conn:
        for sql in BEFORE_FLAGS:
            conn.execute(
                sa.text(sql),
                {"t0": t0, "t1": t0 + timedelta(hours=1), "t2": t0 + timedelta(hours=2)},
            )
    upgrade(url)
    with engine.connect() as conn:
        untagged = conn.execute(sa.text("SELECT item_id FROM items WHERE untagged")).scalars()
        assert set(untagged) == {"new"}
        fresh = conn.execute(sa.text("SELECT item_id, fresh FROM current_tag_rows")).all()
        assert dict(fresh) == {"fresh": True, "changed": False, "old": False}
        # Items inserted by hand afterwards count as untagged.
        conn.execute(sa.text("INSERT INTO items (item_id, image_uri) VALUES ('raw', '/e')"))
        raw = conn.execute(sa.text("SELECT untagged FROM items WHERE item_id = 'raw'"))
        assert raw.scalar_one()
    engine.dispose()


def test_migration_0006_sets_the_stale_flags_on_postgres():
    """Upgrading a filled 0005 database marks exactly the untagged items and the current
    rows that are not fresh; new rows default to untagged."""
    from tests.services import postgres_database

    with postgres_database() as url:
        _migrate_flags(url)


def test_migration_0006_sets_the_stale_flags_on_sqlite(tmp_path):
    """The same on the embedded database."""
    _migrate_flags(f"sqlite:///{tmp_path / 'flags.db'}")
