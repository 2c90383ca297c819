"""Database tables, engines and migrations. The schema is only changed by Alembic migrations
(tagger/migrations/versions); these classes mirror it for queries.

Engines and session factories are made by entry points (CLI, worker process after the fork),
never at import time: a pool shared across fork hands the same socket to two processes.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from tagger.exceptions import ConfigError
from tagger.states import ItemState, JobStatus

JSONType = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
# A list of item ids: a text[] on Postgres (unnest in SQL), a JSON array on SQLite.
IdList = sa.JSON().with_variant(postgresql.ARRAY(sa.Text()), "postgresql")
# Inside the package (shipped as package data), so a non-editable install finds it too.
MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Base(DeclarativeBase):
    pass


class Item(Base):
    __tablename__ = "items"

    item_id: Mapped[str] = mapped_column(sa.String(255), primary_key=True)
    image_uri: Mapped[str] = mapped_column(sa.Text)
    title: Mapped[str | None] = mapped_column(sa.Text)
    fingerprint: Mapped[str | None] = mapped_column(sa.String(128))
    created_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True), default=utcnow)
    # True until the item's first tag is saved (tagger.current keeps it): with the current
    # rows that are not ``fresh`` it is what the sweep queues, found through partial indexes.
    untagged: Mapped[bool] = mapped_column(sa.Boolean, default=True, server_default=sa.true())


class ModelVersion(Base):
    __tablename__ = "model_versions"

    version: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    artifact_uri: Mapped[str] = mapped_column(sa.Text)
    gender_labels: Mapped[list[str]] = mapped_column(JSONType)
    product_labels: Mapped[list[str]] = mapped_column(JSONType)
    image_size: Mapped[int] = mapped_column(sa.Integer)
    uses_text: Mapped[bool] = mapped_column(sa.Boolean)
    metrics: Mapped[dict | None] = mapped_column(JSONType)
    is_active: Mapped[bool] = mapped_column(sa.Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True), default=utcnow)
    activated_at: Mapped[datetime | None] = mapped_column(sa.DateTime(timezone=True))


class Tag(Base):
    __tablename__ = "tags"

    item_id: Mapped[str] = mapped_column(
        sa.ForeignKey("items.item_id", ondelete="CASCADE"), primary_key=True
    )
    model_version: Mapped[str] = mapped_column(
        sa.ForeignKey("model_versions.version"), primary_key=True
    )
    gender: Mapped[str] = mapped_column(sa.String(64))
    gender_score: Mapped[float] = mapped_column(sa.Float)
    product_type: Mapped[str] = mapped_column(sa.String(64))
    product_score: Mapped[float] = mapped_column(sa.Float)
    scores: Mapped[dict] = mapped_column(JSONType)
    tagged_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True), default=utcnow)
    #: the best product score minus the second best (a small margin: a close call)
    product_margin: Mapped[float | None] = mapped_column(sa.Float)


class CurrentTagRow(Base):
    """The tag each item shows, with its label and score columns: the table behind the
    ``current_tags`` view, kept true by ``tagger.current`` (see there)."""

    __tablename__ = "current_tag_rows"
    __table_args__ = (
        sa.ForeignKeyConstraint(
            ["item_id", "model_version"], ["tags.item_id", "tags.model_version"]
        ),
    )

    item_id: Mapped[str] = mapped_column(
        sa.ForeignKey("items.item_id", ondelete="CASCADE"), primary_key=True
    )
    model_version: Mapped[str] = mapped_column(sa.String(64))
    gender: Mapped[str] = mapped_column(sa.String(64))
    gender_score: Mapped[float] = mapped_column(sa.Float)
    product_type: Mapped[str] = mapped_column(sa.String(64))
    product_score: Mapped[float] = mapped_column(sa.Float)
    tagged_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True))
    # The active version's tag, not older than the item's last change: false means the
    # item needs tagging again.
    fresh: Mapped[bool] = mapped_column(sa.Boolean, default=False)
    product_margin: Mapped[float | None] = mapped_column(sa.Float)
    #: the row shows a person's label (tagger.labels) over the model's tag
    human: Mapped[bool] = mapped_column(sa.Boolean, default=False)


class Label(Base):
    """A person's correction of an item: shown over any model's tag (tagger.labels)."""

    __tablename__ = "labels"

    item_id: Mapped[str] = mapped_column(
        sa.ForeignKey("items.item_id", ondelete="CASCADE"), primary_key=True
    )
    gender: Mapped[str | None] = mapped_column(sa.String(64))
    product_type: Mapped[str | None] = mapped_column(sa.String(64))
    labelled_by: Mapped[str] = mapped_column(sa.Text)
    labelled_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True), default=utcnow)
    note: Mapped[str | None] = mapped_column(sa.Text)


class LabelChange(Base):
    """The audit of labels: who changed which item's label when, from what to what."""

    __tablename__ = "label_changes"

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    item_id: Mapped[str] = mapped_column(sa.String(255))
    changed_by: Mapped[str] = mapped_column(sa.Text)
    changed_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True), default=utcnow)
    before: Mapped[dict | None] = mapped_column(sa.JSON)
    after: Mapped[dict | None] = mapped_column(sa.JSON)


class Job(Base):
    __tablename__ = "jobs"

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(sa.String(16))
    source: Mapped[str | None] = mapped_column(sa.Text)
    status: Mapped[str] = mapped_column(sa.String(16), default=JobStatus.QUEUED)
    total: Mapped[int] = mapped_column(sa.Integer, default=0)
    done: Mapped[int] = mapped_column(sa.Integer, default=0)
    failed: Mapped[int] = mapped_column(sa.Integer, default=0)
    skipped: Mapped[int] = mapped_column(sa.Integer, default=0)
    #: pending items a newer job took over (a sweep re-queuing a stalled job's items)
    moved: Mapped[int] = mapped_column(sa.Integer, default=0)
    batch_size: Mapped[int] = mapped_column(sa.Integer)
    created_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(sa.DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(sa.DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True), default=utcnow)
    #: a shadow job's version (tags written under it, never shown as current); None: the
    #: active version at the time each batch runs
    model_version: Mapped[str | None] = mapped_column(sa.String(64))


class ReviewThreshold(Base):
    """The confidence under which a tag of one class needs a person's look: a product
    tag's margin over the second-best type, a gender tag's score (tagger.review)."""

    __tablename__ = "review_thresholds"

    model_version: Mapped[str] = mapped_column(
        sa.ForeignKey("model_versions.version", ondelete="CASCADE"), primary_key=True
    )
    head: Mapped[str] = mapped_column(sa.String(16), primary_key=True)
    label: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    threshold: Mapped[float] = mapped_column(sa.Float)
    #: artifact (fitted on the validation split), default (a setting) or manual
    source: Mapped[str] = mapped_column(sa.String(16))
    set_by: Mapped[str | None] = mapped_column(sa.Text)
    set_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True), default=utcnow)


class ModelComparison(Base):
    """What `tagger model compare` measured of a candidate against the active version."""

    __tablename__ = "model_comparisons"

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    candidate: Mapped[str] = mapped_column(sa.String(64))
    baseline: Mapped[str] = mapped_column(sa.String(64))
    job_id: Mapped[int | None] = mapped_column(sa.ForeignKey("jobs.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True), default=utcnow)
    report: Mapped[dict] = mapped_column(sa.JSON)


class JobBatch(Base):
    """A job's members, as the batches it queued: one row per batch (its item ids), so a
    job of a million items writes 15,625 rows, not a million. What became of each item is
    in ``job_items`` (see tagger.ledger)."""

    __tablename__ = "job_batches"

    job_id: Mapped[int] = mapped_column(
        sa.ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True
    )
    seq: Mapped[int] = mapped_column(sa.Integer, primary_key=True)
    item_ids: Mapped[list[str]] = mapped_column(IdList)


class JobItem(Base):
    """The ledger's per-item half: a row once an item's batch was delivered (attempts,
    deaths) or the item was settled (tagged, failed, moved). An item of a job with no row
    here is pending and was never delivered. Counters on ``jobs`` move only when a row
    here changes state, so a re-delivered batch counts nothing twice."""

    __tablename__ = "job_items"

    job_id: Mapped[int] = mapped_column(
        sa.ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True
    )
    item_id: Mapped[str] = mapped_column(
        sa.ForeignKey("items.item_id", ondelete="CASCADE"), primary_key=True
    )
    state: Mapped[str] = mapped_column(sa.String(16), default=ItemState.PENDING)
    #: why the item failed in this job (failed items; None before migration 0012)
    reason: Mapped[str | None] = mapped_column(sa.String(32))
    updated_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True), default=utcnow)
    #: deliveries of the item's batch that started / that died before finishing
    attempts: Mapped[int] = mapped_column(sa.Integer, default=0)
    deaths: Mapped[int] = mapped_column(sa.Integer, default=0)
    #: set while a delivery is in flight; still set at the next start = that one died
    started_at: Mapped[datetime | None] = mapped_column(sa.DateTime(timezone=True))


class Failure(Base):
    __tablename__ = "failures"

    item_id: Mapped[str] = mapped_column(
        sa.ForeignKey("items.item_id", ondelete="CASCADE"), primary_key=True
    )
    job_id: Mapped[int | None] = mapped_column(sa.ForeignKey("jobs.id", ondelete="SET NULL"))
    reason: Mapped[str] = mapped_column(sa.String(32))
    message: Mapped[str] = mapped_column(sa.Text)
    attempts: Mapped[int] = mapped_column(sa.Integer, default=1)
    first_seen: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True), default=utcnow)
    last_seen: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True), default=utcnow)


current_tags = sa.table(
    "current_tags",
    *(
        sa.column(name)
        for name in (
            "item_id",
            "model_version",
            "is_active_model",
            "gender",
            "gender_score",
            "product_type",
            "product_score",
            "scores",
            "tagged_at",
            "product_margin",
            "source",
            "needs_review",
        )
    ),
)


def make_engine(url: str, **kwargs) -> sa.Engine:
    """An engine for ``url``: pre-ping on Postgres (dropped connections), FKs on SQLite."""
    if url.startswith("sqlite"):
        engine = sa.create_engine(url, connect_args={"timeout": 30}, **kwargs)

        @sa.event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):  # pragma: no cover - trivial
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA journal_mode=WAL")
            cur.close()

        return engine
    # Without a connect timeout, a Postgres host that drops packets (rather than refusing)
    # hangs a command for the operating system's TCP timeout, minutes, before its error.
    connect_args = {"connect_timeout": 10, **kwargs.pop("connect_args", {})}
    return sa.create_engine(url, pool_pre_ping=True, connect_args=connect_args, **kwargs)


def make_session_factory(engine: sa.Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


def insert(session: Session, table):
    """A dialect-specific INSERT that supports ``on_conflict_do_update`` (Postgres, SQLite)."""
    name = session.get_bind().dialect.name
    if name == "postgresql":
        return postgresql.insert(table)
    if name == "sqlite":
        return sqlite.insert(table)
    raise ConfigError(f"unsupported database dialect {name!r}")


def is_postgres(session: Session) -> bool:
    """Whether the session speaks to Postgres (else SQLite, the embedded mode)."""
    return session.get_bind().dialect.name == "postgresql"


@contextmanager
def planner_without(session: Session, *methods: str) -> Iterator[None]:
    """Postgres plans the statements run inside without the given join methods
    (``"hashjoin"``, ``"mergejoin"``): for the few bulk statements where its estimate
    picks a join measured to be slower. Only this transaction, and only until the end of
    the block."""
    for method in methods:
        session.execute(sa.text(f"SET LOCAL enable_{method} = off"))
    yield
    for method in methods:
        session.execute(sa.text(f"RESET enable_{method}"))


def alembic_config(url: str):
    from alembic.config import Config

    if not (MIGRATIONS_DIR / "env.py").exists():
        raise ConfigError(f"migrations folder not found at {MIGRATIONS_DIR}")
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["url"] = url
    return cfg


def upgrade(url: str, revision: str = "head") -> None:
    """Apply migrations up to ``revision`` (what `tagger db upgrade` runs)."""
    from alembic import command

    command.upgrade(alembic_config(url), revision)


def truncate_all(engine: sa.Engine) -> None:
    """Empty every table (tests). Postgres: one TRUNCATE; SQLite: DELETE in FK order."""
    tables = [t.name for t in reversed(Base.metadata.sorted_tables)]
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(sa.text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE"))
        else:
            for name in tables:
                conn.execute(sa.text(f"DELETE FROM {name}"))
