"""The import's staging table: a catalogue is loaded into a temporary table in chunks,
then checked and applied with set-based SQL, so memory does not grow with the catalogue.

On Postgres the rows go in with one streaming ``COPY`` (psycopg2's ``copy_expert`` on the
session's own connection, fed a chunk at a time); on SQLite (the embedded mode) with
``executemany`` per chunk. Temporary tables
belong to the connection, so everything here runs in the caller's one transaction: a
refused catalogue rolls back with nothing written to ``items`` or ``jobs``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from itertools import islice

import sqlalchemy as sa
from sqlalchemy.orm import Session

from tagger.catalogue import CatalogueRow
from tagger.copy_format import CopyStream
from tagger.db import is_postgres, planner_without
from tagger.ledger import write_batches

STAGING = "import_staging"
PLAN = "import_plan"
COLUMNS = ("line", "item_id", "image_uri", "title", "fingerprint")
# Rows per chunk of the COPY stream / per executemany: big enough that per-call costs
# vanish, small enough that a chunk's text stays well under a MB.
CHUNK_ROWS = 5_000
# Arbitrary constant naming the imports' advisory lock (pg_advisory_xact_lock: a bigint).
IMPORT_LOCK_KEY = 0x7461_6767_6572_0002
# Plan by index lookups when the catalogue holds more than this many times the staged
# rows (plan_staged); below it, hash joins over the whole catalogue are as quick.
PROBE_ABOVE = 4
# Typed, so SQLite stores it in SQLAlchemy's DateTime format (a raw datetime would go in
# with its UTC offset, which the ORM cannot read back).
NOW = sa.bindparam("now", type_=sa.DateTime(timezone=True))


def create_staging(*, session: Session) -> None:
    """An empty staging table for this transaction (one left by an earlier import on this
    connection is dropped first)."""
    drop_staging(session=session)
    # Postgres drops it at commit or rollback by itself; SQLite needs drop_staging.
    on_commit = " ON COMMIT DROP" if is_postgres(session) else ""
    session.execute(
        sa.text(
            f"CREATE TEMPORARY TABLE {STAGING} (line INTEGER NOT NULL, item_id TEXT NOT NULL, "
            f"image_uri TEXT NOT NULL, title TEXT, fingerprint TEXT){on_commit}"
        )
    )
    if is_postgres(session):
        # The hash joins, the GROUP BY and the item-id sorts over a million staged rows
        # stay in memory (at 64MB each sort spilled ~100MB to disk); LOCAL: this
        # transaction only, and a larger catalogue still spills rather than fails.
        session.execute(sa.text("SET LOCAL work_mem = '256MB'"))
        # JIT-compiling these one-off statements cost ~0.3 s each and saved nothing.
        session.execute(sa.text("SET LOCAL jit = off"))


def drop_staging(*, session: Session) -> None:
    session.execute(sa.text(f"DROP TABLE IF EXISTS {PLAN}"))
    session.execute(sa.text(f"DROP TABLE IF EXISTS {STAGING}"))


def stage_stream(
    *,
    session: Session,
    rows: Iterator[CatalogueRow],
    chunk_rows: int = CHUNK_ROWS,
    on_chunk: Callable[[], None] | None = None,
) -> int:
    """Append every row of ``rows`` to the staging table; returns how many.
    ``on_chunk`` is called after each ``chunk_rows`` rows (a progress bar's tick).

    On Postgres this is one COPY fed as the rows are read: the server stores a chunk
    while Python checks the next, so reading and loading overlap on two cores (a COPY per
    chunk made each side wait for the other). On SQLite, executemany per chunk.
    """
    if is_postgres(session):
        stream = CopyStream(rows, chunk_rows, on_chunk)
        dbapi = session.connection().connection.dbapi_connection
        with dbapi.cursor() as cursor:  # type: ignore[union-attr]
            cursor.copy_expert(
                f"COPY {STAGING} ({', '.join(COLUMNS)}) FROM STDIN WITH (NULL '')", stream
            )
        return stream.count
    insert = sa.text(
        f"INSERT INTO {STAGING} ({', '.join(COLUMNS)}) "
        f"VALUES ({', '.join(':' + c for c in COLUMNS)})"
    )
    count = 0
    while chunk := [dict(zip(COLUMNS, row, strict=True)) for row in islice(rows, chunk_rows)]:
        session.execute(insert, chunk)
        count += len(chunk)
        if on_chunk is not None:
            on_chunk()
    return count


@dataclass(frozen=True)
class Duplicate:
    item_id: str
    first_line: int
    first_uri: str
    line: int
    uri: str


def find_duplicate(*, session: Session) -> Duplicate | None:
    """The item id given twice whose second row comes first, or None.

    A unique index on the staged ids (Postgres) or a GROUP BY (SQLite) answers "any at
    all?"; only when there are some does the window query find which one to report, with
    both lines.
    """
    if is_postgres(session):
        session.execute(sa.text(f"ANALYZE {STAGING}"))  # temp tables are never auto-analyzed
        # A unique index is built by one sort (0.5 s for a million ids; the GROUP BY took
        # 1.9 s) and fails on the first id given twice; a savepoint keeps that failure
        # from aborting the import's transaction.
        try:
            with session.begin_nested():
                session.execute(sa.text(f"CREATE UNIQUE INDEX ON {STAGING} (item_id)"))
            return None
        except sa.exc.IntegrityError:
            any_twice = True
    else:
        any_twice = session.execute(
            sa.text(f"SELECT 1 FROM {STAGING} GROUP BY item_id HAVING count(*) > 1 LIMIT 1")
        ).first()
    if any_twice is None:
        return None
    row = session.execute(
        sa.text(
            f"""
            SELECT item_id, first_line, first_uri, line, image_uri FROM (
                SELECT item_id, line, image_uri,
                       first_value(line) OVER w AS first_line,
                       first_value(image_uri) OVER w AS first_uri,
                       row_number() OVER w AS n
                FROM {STAGING}
                WHERE item_id IN (
                    SELECT item_id FROM {STAGING} GROUP BY item_id HAVING count(*) > 1
                )
                WINDOW w AS (PARTITION BY item_id ORDER BY line)
            ) twice WHERE n = 2 ORDER BY line LIMIT 1
            """
        )
    ).one()
    return Duplicate(*row)


def _estimated_rows(session: Session, table: str) -> float:
    # The planner's own estimate (kept by autovacuum, or by ANALYZE for the staging
    # table): a count would read the table.
    return float(
        session.execute(
            sa.text(f"SELECT greatest(reltuples, 0) FROM pg_class WHERE oid = '{table}'::regclass")
        ).scalar_one()
    )


@dataclass(frozen=True)
class StagedCounts:
    items: int
    new: int
    changed: int  # existing items whose image URI, fingerprint or title changed
    to_tag: int  # new, image changed, or no tag from the active version


def plan_staged(*, session: Session) -> StagedCounts:
    """Compare the staged rows with ``items`` and ``current_tag_rows`` before anything is
    written and keep the decisions in a second temporary table (the upsert would erase
    them):

    - new: no such item yet;
    - image changed: another URI, or a fingerprint that differs from the stored one;
    - to tag: new, image changed, or no fresh tag (from the active version, not older
      than the item's last change);
    - to upsert: new, image changed, or another title.

    The rules are import_items' from before staging, as set-based SQL.
    """
    postgres = is_postgres(session)
    if postgres:
        # Imports take turns from here to their commit, so what this plan calls new is
        # still new when apply_plan inserts it (SQLite runs one writer at a time anyway).
        session.execute(sa.select(sa.func.pg_advisory_xact_lock(IMPORT_LOCK_KEY)))
    on_commit = " ON COMMIT DROP" if postgres else ""
    probe = postgres and (
        _estimated_rows(session, "items") > PROBE_ABOVE * _estimated_rows(session, STAGING)
    )
    # Left to itself the planner hashes the staged rows and reads every item and every
    # current row past them: 21 s for a million staged rows against ten million items,
    # most of it hashing the ten million keys. Looking each staged id up in the two
    # primary keys reads only what the file names (about 5 s). The current row is looked
    # up by the item found, not by the staged id: a new item (no such item, so no current
    # row either) then costs one lookup, not two (2.9 s against 3.9 s for a million new).
    methods = ("hashjoin", "mergejoin") if probe else ()
    with planner_without(session, *methods):
        session.execute(
            sa.text(
                f"""
                CREATE TEMPORARY TABLE {PLAN}{on_commit} AS
                SELECT s.item_id, s.image_uri, s.title, s.fingerprint,
                       i.item_id IS NULL AS is_new,
                       i.item_id IS NOT NULL AND (
                           i.image_uri <> s.image_uri
                           OR (s.fingerprint IS NOT NULL
                               AND coalesce(i.fingerprint <> s.fingerprint, TRUE))
                       ) AS image_changed,
                       i.item_id IS NOT NULL AND coalesce(
                           i.title <> s.title, (i.title IS NULL) <> (s.title IS NULL)
                       ) AS title_changed,
                       NOT coalesce(c.fresh, FALSE) AS untagged
                FROM {STAGING} s
                LEFT JOIN items i ON i.item_id = s.item_id
                LEFT JOIN current_tag_rows c ON c.item_id = i.item_id
                """
            )
        )
    items, new, changed, to_tag = session.execute(
        sa.text(
            f"""
            SELECT count(*),
                   coalesce(sum(CASE WHEN is_new THEN 1 ELSE 0 END), 0),
                   coalesce(sum(CASE WHEN NOT is_new AND (image_changed OR title_changed)
                                THEN 1 ELSE 0 END), 0),
                   coalesce(sum(CASE WHEN is_new OR image_changed OR untagged
                                THEN 1 ELSE 0 END), 0)
            FROM {PLAN}
            """
        )
    ).one()
    return StagedCounts(items=int(items), new=int(new), changed=int(changed), to_tag=int(to_tag))


def apply_plan(
    *,
    session: Session,
    job_id: int,
    batch_size: int,
    now: datetime,
    timings: dict[str, float] | None = None,
) -> None:
    """Insert the new items and update the changed ones, then write job ``job_id``'s
    batches of the items to tag (tagger.ledger). Existing items are updated in item-id order, so
    an import and workers marking items tagged lock them in the same order."""
    started = time.perf_counter()
    upsert = "is_new OR image_changed OR title_changed"
    if is_postgres(session):
        # New items go in by a plain INSERT, unsorted: no other import can add them first
        # (plan_staged took the imports' lock), and ON CONFLICT with the sort cost twice as
        # much (11.9 s against 6.5 s for a million new items).
        session.execute(
            sa.text(
                f"""
                INSERT INTO items (item_id, image_uri, title, fingerprint, created_at,
                                   updated_at, untagged)
                SELECT item_id, image_uri, title, fingerprint, :now, :now, TRUE FROM {PLAN}
                WHERE is_new
                """
            ).bindparams(NOW),
            {"now": now},
        )
        upsert = "NOT is_new AND (image_changed OR title_changed)"
    session.execute(
        sa.text(
            f"""
            INSERT INTO items (item_id, image_uri, title, fingerprint, created_at, updated_at,
                               untagged)
            SELECT item_id, image_uri, title, fingerprint, :now, :now, TRUE FROM {PLAN}
            WHERE {upsert}
            ORDER BY item_id
            ON CONFLICT (item_id) DO UPDATE SET
                image_uri = excluded.image_uri,
                title = excluded.title,
                fingerprint = excluded.fingerprint,
                updated_at = excluded.updated_at
            """
        ).bindparams(NOW),
        {"now": now},
    )
    # A changed item's tag is older than the change now: not fresh, so a sweep re-tags it
    # even if this import's job never runs.
    session.execute(
        sa.text(
            f"""
            UPDATE current_tag_rows SET fresh = FALSE
            WHERE fresh AND item_id IN (
                SELECT item_id FROM {PLAN} WHERE NOT is_new AND (image_changed OR title_changed)
            )
            """
        )
    )
    upserted = time.perf_counter()
    # In item-id order, so the batches do not depend on the plan's join order (sorting a
    # million ids here costs a fraction of a second).
    write_batches(
        session=session,
        job_id=job_id,
        ids_sql=f"SELECT item_id FROM {PLAN} WHERE is_new OR image_changed OR untagged",
        batch_size=batch_size,
    )
    if timings is not None:
        timings["items upsert"] = upserted - started
        timings["job batches"] = time.perf_counter() - upserted
