"""The review page's SQL: the grid (filters, keyset pages), one item, the filter choices.

SQLAlchemy only (no web framework), keyword-only functions handed the session, so a
benchmark times exactly what the page runs. Every value reaches SQL as a bound parameter;
the only words chosen by a request are the sort and the queue, each checked against the
tuples below before any SQL is built.

Paging is by keyset, never OFFSET: a page is "the next ``limit`` rows after the last one
shown", found through an index whatever the page number. The review queue (needs review,
lowest product margin first) walks ``ix_current_tag_rows_margin`` on (product_margin,
item_id); the item-id order walks the primary key. Rows whose margin is NULL (tags written
before margins existed, where migration 0009 found no product scores) come after every
other row, in item-id order: a row comparison against a NULL is never true, so the two
runs are paged separately and the cursor says which one it is in.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.orm import Session

from tagger.db import Item, Label, LabelChange, ModelVersion
from tagger.labels import label_history
from tagger.ledger import member_ids
from tagger.registry import get_active_model_version
from tagger.tags import source_condition

Sort = Literal["margin", "item"]
Source = Literal["human", "model"]
#: Sort orders a request may ask for: the review queue's, and plain item-id order.
SORTS: tuple[str, ...] = ("margin", "item")
SOURCES: tuple[str, ...] = ("human", "model")
#: Most rows one page may hold.
MAX_LIMIT = 500

# The current_tags view with its column types (tagger.db's is untyped): SQLite hands back
# booleans, timestamps and JSON as plain numbers and text unless the column says what
# they are.
view = sa.table(
    "current_tags",
    sa.column("item_id", sa.String),
    sa.column("model_version", sa.String),
    sa.column("is_active_model", sa.Boolean),
    sa.column("gender", sa.String),
    sa.column("gender_score", sa.Float),
    sa.column("product_type", sa.String),
    sa.column("product_score", sa.Float),
    sa.column("scores", sa.JSON),
    sa.column("tagged_at", sa.DateTime(timezone=True)),
    sa.column("product_margin", sa.Float),
    sa.column("source", sa.String),
    sa.column("needs_review", sa.Boolean),
)
items = Item.__table__
# What a grid cell shows; not ``scores`` (the wide JSON column), so the grid never reads
# the tags table (Postgres drops the view's join to it).
GRID_COLUMNS = (
    view.c.item_id,
    view.c.model_version,
    view.c.gender,
    view.c.gender_score,
    view.c.product_type,
    view.c.product_score,
    view.c.product_margin,
    view.c.source,
    view.c.needs_review,
    view.c.tagged_at,
    items.c.image_uri,
    items.c.title,
)


class CursorError(ValueError):
    """A page cursor that this module did not write (or for another sort order)."""


@dataclass(frozen=True)
class Filters:
    """What the grid shows. Values are checked by the caller (tagger.web.params) against
    the database's labels and versions; here only their SQL is built."""

    needs_review: bool = True
    gender: str | None = None
    product_type: str | None = None
    min_score: float | None = None  # product score
    max_score: float | None = None
    model_version: str | None = None
    job_id: int | None = None
    source: Source | None = None
    sort: Sort = "margin"

    def __post_init__(self) -> None:
        # The sort names a column list below: never anything a request wrote unchecked.
        if self.sort not in SORTS:
            raise ValueError(f"sort must be one of {', '.join(SORTS)}, got {self.sort!r}")
        if self.source is not None and self.source not in SOURCES:
            raise ValueError(f"source must be human or model, got {self.source!r}")


@dataclass(frozen=True)
class Page:
    rows: list[dict[str, Any]]
    #: the cursor of the next page (``after=``), None on the last page
    next_after: str | None


@dataclass(frozen=True)
class Choices:
    """The values the filters accept: every registered version's labels, and the versions
    (newest first)."""

    genders: list[str]
    product_types: list[str]
    versions: list[str]


@dataclass(frozen=True)
class ItemDetail:
    item_id: str
    image_uri: str
    title: str | None
    #: the item's current_tags row with ``scores``; None while it has no tag
    tag: dict[str, Any] | None
    #: the person's label (gender, product_type, note, labelled_by, labelled_at), if any
    label: dict[str, Any] | None
    history: list[LabelChange]
    #: the values a correction may set: the active version's labels
    genders: list[str] = field(default_factory=list)
    product_types: list[str] = field(default_factory=list)


def filtered(*, session: Session, filters: Filters) -> sa.Select:
    """The grid's SELECT with every filter applied, not yet ordered or limited."""
    stmt = sa.select(*GRID_COLUMNS).select_from(view.join(items, items.c.item_id == view.c.item_id))
    if filters.needs_review:
        stmt = stmt.where(view.c.needs_review == sa.true())
    if filters.gender is not None:
        stmt = stmt.where(view.c.gender == filters.gender)
    if filters.product_type is not None:
        stmt = stmt.where(view.c.product_type == filters.product_type)
    if filters.min_score is not None:
        stmt = stmt.where(view.c.product_score >= filters.min_score)
    if filters.max_score is not None:
        stmt = stmt.where(view.c.product_score <= filters.max_score)
    if filters.model_version is not None:
        stmt = stmt.where(view.c.model_version == filters.model_version)
    if filters.job_id is not None:
        # A job's members are its batches' id arrays (tagger.ledger reads them on both
        # databases); an item is in the job whatever became of it there.
        members = (
            member_ids(session=session, job_id=filters.job_id)
            .columns(sa.column("item_id", sa.String))
            .subquery("members")
        )
        stmt = stmt.where(view.c.item_id.in_(sa.select(members.c.item_id)))
    if filters.source is not None:
        stmt = stmt.where(source_condition(view.c.item_id, filters.source))
    return stmt


def grid_page(
    *, session: Session, filters: Filters, after: str | None = None, limit: int = 48
) -> Page:
    """One page of the grid: ``limit`` rows after the cursor ``after`` (a previous page's
    ``next_after``; None: the first page). One extra row is read to know whether another
    page follows, so nothing counts the whole filtered set."""
    if not 1 <= limit <= MAX_LIMIT:
        raise ValueError(f"limit must be between 1 and {MAX_LIMIT}, got {limit}")
    base = filtered(session=session, filters=filters)
    margin, item_id = view.c.product_margin, view.c.item_id
    if filters.sort == "item":
        stmt = base
        if after is not None:
            stmt = stmt.where(item_id > _decode(after, "item")[2])
        rows = _rows(session, stmt.order_by(item_id), limit + 1)
    else:
        run, last_margin, last_id = _decode(after, "margin") if after else ("m", None, None)
        rows = []
        if run == "m":
            # The margins first: (margin, id) above the cursor, through the margin index.
            stmt = base.where(margin.is_not(None))
            if last_margin is not None:
                stmt = stmt.where(sa.tuple_(margin, item_id) > sa.tuple_(last_margin, last_id))
            rows = _rows(session, stmt.order_by(margin, item_id), limit + 1)
            last_id = None  # the NULL run, if reached, starts at its beginning
        if len(rows) <= limit:
            # Then the rows without a margin, in item-id order.
            stmt = base.where(margin.is_(None))
            if last_id is not None:
                stmt = stmt.where(item_id > last_id)
            rows += _rows(session, stmt.order_by(item_id), limit + 1 - len(rows))
    shown = rows[:limit]
    more = len(rows) > limit and bool(shown)
    return Page(rows=shown, next_after=_encode(filters.sort, shown[-1]) if more else None)


def count_matches(*, session: Session, filters: Filters, cap: int = 1000) -> int:
    """How many rows match, counting no further than ``cap + 1`` (the page says "more
    than ``cap``"): an exact count of a million-row filter would cost a full scan."""
    bounded = filtered(session=session, filters=filters).limit(cap + 1).subquery()
    return int(session.scalar(sa.select(sa.func.count()).select_from(bounded)) or 0)


def filter_choices(*, session: Session) -> Choices:
    """Every registered version's labels and the versions, newest first (a small table)."""
    rows = session.execute(
        sa.select(
            ModelVersion.version, ModelVersion.gender_labels, ModelVersion.product_labels
        ).order_by(ModelVersion.created_at.desc(), ModelVersion.version)
    ).all()
    genders = sorted({g for r in rows for g in r.gender_labels})
    products = sorted({p for r in rows for p in r.product_labels})
    return Choices(genders=genders, product_types=products, versions=[r.version for r in rows])


def item_detail(*, session: Session, item_id: str) -> ItemDetail | None:
    """Everything the item page shows, or None when there is no such item."""
    item = session.get(Item, item_id)
    if item is None:
        return None
    found = session.execute(sa.select(view).where(view.c.item_id == item_id)).first()
    tag = dict(found._mapping) if found is not None else None
    label = session.get(Label, item_id)
    labelled = None
    if label is not None:
        labelled = {
            "gender": label.gender,
            "product_type": label.product_type,
            "note": label.note,
            "labelled_by": label.labelled_by,
            "labelled_at": label.labelled_at,
        }
    # A correction must be a value the active model knows (tagger.labels checks it); with
    # no active model, the labels of the version that tagged the item.
    model = get_active_model_version(session=session)
    if model is None and tag is not None:
        model = session.get(ModelVersion, tag["model_version"])
    return ItemDetail(
        item_id=item.item_id,
        image_uri=item.image_uri,
        title=item.title,
        tag=tag,
        label=labelled,
        history=label_history(session=session, item_id=item_id),
        genders=list(model.gender_labels) if model else [],
        product_types=list(model.product_labels) if model else [],
    )


def image_uri(*, session: Session, item_id: str) -> str | None:
    """The item's image URI, or None when there is no such item."""
    return session.scalar(sa.select(Item.image_uri).where(Item.item_id == item_id))


def _rows(session: Session, stmt: sa.Select, limit: int) -> list[dict[str, Any]]:
    return [dict(r._mapping) for r in session.execute(stmt.limit(limit))]


# A cursor is the last row's sort key as URL-safe base64 of JSON: opaque to the page, and
# decoded back into typed values (never pasted into SQL; they are bound like any filter).
def _encode(sort: str, row: dict[str, Any]) -> str:
    if sort == "item":
        key: list[Any] = ["i", None, row["item_id"]]
    elif row["product_margin"] is None:
        key = ["n", None, row["item_id"]]
    else:
        key = ["m", float(row["product_margin"]), row["item_id"]]
    raw = json.dumps(key, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode(cursor: str, sort: str) -> tuple[str, float | None, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        run, margin, item_id = json.loads(raw)
    except (ValueError, TypeError) as exc:
        raise CursorError("not a page cursor") from exc
    runs = ("i",) if sort == "item" else ("m", "n")
    ok = run in runs and isinstance(item_id, str)
    if run == "m":
        ok = ok and isinstance(margin, (int, float)) and not isinstance(margin, bool)
    elif margin is not None:
        ok = False
    if not ok:
        raise CursorError("not a page cursor for this sort order")
    return run, (float(margin) if margin is not None else None), item_id
