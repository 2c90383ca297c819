"""Sweep planning at catalogue scale: how long `plan_sweep` takes to choose and ledger a
large re-tag job on Postgres. Not a test: it needs minutes and a few GB of disk.

    .venv/bin/python benchmarks/sweep_scale.py                     # 1 M items, all stale
    .venv/bin/python benchmarks/sweep_scale.py --items 10000000    # 10 M items, 1 M stale
    .venv/bin/python benchmarks/sweep_scale.py --explain           # + EXPLAIN ANALYZE

It creates a fresh database (as tests/services.py does), migrates it with Alembic
(tagger.db.upgrade, so the indexes are the migrations'), bulk-fills it with
``INSERT ... SELECT generate_series``:
- --items catalogue items, their ``updated_at`` not correlated with their id;
- a v1 tag for every item and a v2 tag (v2 active) for all but --stale of them, spread
  evenly over the catalogue (the hard case: no index range holds the stale ones);
- a finished import job whose ledger has a row per item (a catalogue's first import),
  a stalled job and a live job with a few stale items pending (handed over / left alone),
  and failed items due a retry;
then VACUUM ANALYZE (what autovacuum does on a live database) and times
``plan_sweep(limit=--limit)`` (job row, ledger rows, hand-over, total) in a transaction
that is rolled back, --repeat times, and reading the plan's batches back in keyset pages.
The database is dropped afterwards unless --keep.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import sqlalchemy as sa
from sqlalchemy.orm import Session

from tagger.current import refresh_current_tags

PG_ADMIN_URL = os.environ.get(
    "TAGGER_TEST_PG_ADMIN_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
)

FILL = [
    # Items: ids in catalogue order, updated_at scattered over a day (not id order).
    """
    INSERT INTO items (item_id, image_uri, fingerprint, created_at, updated_at, untagged)
    SELECT 'item-' || lpad(g::text, 9, '0'), 's3://bench/img/' || g || '.jpg', md5(g::text),
           :t0, :t0 + ((g::bigint * 7919) % 86400000) * interval '1 millisecond', false
    FROM generate_series(1, :n) g
    """,
    """
    INSERT INTO model_versions (version, artifact_uri, gender_labels, product_labels,
                                image_size, uses_text, is_active, created_at, activated_at)
    VALUES ('v1', 's3://bench/v1', '["MEN","WOMEN"]', '["Dresses","Pants"]', 224, false,
            false, :t0, :t0),
           ('v2', 's3://bench/v2', '["MEN","WOMEN"]', '["Dresses","Pants"]', 224, false,
            true, :t0, :t0 + interval '3 days')
    """,
    # Tags: v1 for every item, v2 for all but every step-th one (the stale ones).
    """
    INSERT INTO tags (item_id, model_version, gender, gender_score, product_type,
                      product_score, scores, tagged_at)
    SELECT item_id, 'v1', 'MEN', 0.9, 'Dresses', 0.8, '{}', :t0 + interval '2 days'
    FROM items
    """,
    """
    INSERT INTO tags (item_id, model_version, gender, gender_score, product_type,
                      product_score, scores, tagged_at)
    SELECT 'item-' || lpad(g::text, 9, '0'), 'v2', 'WOMEN', 0.9, 'Pants', 0.8, '{}',
           :t0 + interval '4 days'
    FROM generate_series(1, :n) g WHERE g % :step <> 0
    """,
    # The first import's ledger: one finished job, a row per item.
    """
    INSERT INTO jobs (id, kind, source, status, total, done, batch_size, created_at,
                      started_at, finished_at, updated_at)
    VALUES (1, 'import', 'bench', 'finished', :n, :n, 64, :t0, :t0, :t0 + interval '2 days',
            :t0 + interval '2 days')
    """,
    """
    INSERT INTO job_items (job_id, item_id, state, updated_at, attempts)
    SELECT 1, item_id, 'tagged', :t0 + interval '2 days', 1 FROM items
    """,
    # A stalled job (no progress for 3 h) and a live one, each with stale items pending.
    """
    INSERT INTO jobs (id, kind, source, status, total, batch_size, created_at, started_at,
                      updated_at)
    VALUES (2, 'retag', 'stalled', 'running', :pending, 64, now() - interval '5 hours',
            now() - interval '5 hours', now() - interval '3 hours'),
           (3, 'retag', 'live', 'running', :pending, 64, now() - interval '1 hour',
            now() - interval '1 hour', now())
    """,
    """
    INSERT INTO job_items (job_id, item_id, state, updated_at)
    SELECT 2 + (g / :step) % 2, 'item-' || lpad(g::text, 9, '0'), 'pending', now()
    FROM generate_series(:step, :n, :step) g WHERE (g / :step) % 50 < 2
    """,
    "SELECT setval(pg_get_serial_sequence('jobs', 'id'), 3)",
    # Failed items: stale ones that failed once two days ago, due a retry.
    """
    INSERT INTO failures (item_id, job_id, reason, message, attempts, first_seen, last_seen)
    SELECT 'item-' || lpad(g::text, 9, '0'), 1, 'missing_image', 'gone', 1,
           now() - interval '2 days', now() - interval '2 days'
    FROM generate_series(:step, :n, :step) g WHERE (g / :step) % 50 = 7
    """,
]


def create_database() -> tuple[str, sa.Engine]:
    name = f"tagger_bench_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = sa.engine.make_url(PG_ADMIN_URL).set(database=name)
    return url.render_as_string(hide_password=False), admin


def drop_database(admin: sa.Engine, url: str) -> None:
    name = sa.engine.make_url(url).database
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def fill(url: str, *, items: int, stale: int) -> None:
    step = max(1, items // stale)
    params = {"n": items, "step": step, "pending": items // step // 50}
    engine = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        params["t0"] = conn.scalar(sa.text("SELECT now() - interval '30 days'"))
        for sql in FILL:
            started = time.perf_counter()
            conn.execute(sa.text(sql), params)
            print(f"  {time.perf_counter() - started:6.1f} s  {' '.join(sql.split())[:70]}")
        started = time.perf_counter()
        # What each item shows, and whether it is fresh, as activation builds it.
        with sa.create_engine(url).begin() as tx, Session(bind=tx) as session:
            refresh_current_tags(session=session, swap_above=0)
        print(f"  {time.perf_counter() - started:6.1f} s  current tags built")
        started = time.perf_counter()
        conn.execute(sa.text("VACUUM ANALYZE"))
        print(f"  {time.perf_counter() - started:6.1f} s  VACUUM ANALYZE")
    engine.dispose()


def time_plan(url: str, *, limit: int, explain: bool) -> float:
    from tagger.db import make_engine, make_session_factory
    from tagger.pending import pending_batches
    from tagger.settings import Settings
    from tagger.sweep import plan_sweep

    settings = Settings(database_url=url)
    engine = make_engine(settings.database_url)
    sessions = make_session_factory(engine)
    slow: list[tuple[float, str]] = []

    @sa.event.listens_for(engine, "before_cursor_execute")
    def _start(conn, cursor, statement, parameters, context, executemany):
        conn.info["started"] = time.perf_counter()

    @sa.event.listens_for(engine, "after_cursor_execute")
    def _end(conn, cursor, statement, parameters, context, executemany):
        slow.append((time.perf_counter() - conn.info["started"], " ".join(statement.split())))

    with sessions() as session:
        if explain:
            # auto_explain sends each statement's EXPLAIN ANALYZE back as a NOTICE.
            for sql in (
                "LOAD 'auto_explain'",
                "SET auto_explain.log_min_duration = 0",
                "SET auto_explain.log_analyze = on",
                "SET auto_explain.log_buffers = on",
                "SET auto_explain.log_level = notice",
                "SET client_min_messages = notice",
            ):
                session.execute(sa.text(sql))
        started = time.perf_counter()
        plan = plan_sweep(session=session, settings=settings, limit=limit, with_batches=False)
        session.flush()
        planned = time.perf_counter() - started
        started = time.perf_counter()
        items = batches = 0
        for batch in pending_batches(
            session=session, job_id=plan.job_id, batch_size=settings.batch_size
        ):
            items += len(batch)
            batches += 1
        read = time.perf_counter() - started
        if explain:
            for notice in session.connection().connection.dbapi_connection.notices:
                print(notice.rstrip())
        session.rollback()
    for seconds, statement in slow:
        if seconds >= 0.05:  # each statement of the plan that takes any time
            print(f"    {seconds:6.2f} s  {statement[:110]}")
    engine.dispose()
    print(
        f"  plan_sweep(limit={limit:,}): {planned:.2f} s for {plan.total:,} items "
        f"({plan.stale:,} stale, {plan.failed:,} failed, {plan.moved:,} handed over); "
        f"reading its {batches:,} batches back: {read:.2f} s ({items:,} items)"
    )
    return planned


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--stale", type=int, default=1_000_000, help="items lacking a v2 tag")
    parser.add_argument("--limit", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--explain", action="store_true", help="EXPLAIN ANALYZE every statement")
    parser.add_argument("--keep", action="store_true", help="keep the database; print its URL")
    parser.add_argument("--url", help="an already filled database: time only")
    args = parser.parse_args()

    from tagger.db import upgrade

    admin = None
    url = args.url
    if url is None:
        url, admin = create_database()
    try:
        if args.url is None:
            upgrade(url)
            stale = min(args.stale, args.items)
            print(f"filling {args.items:,} items, {stale:,} of them stale:")
            started = time.perf_counter()
            fill(url, items=args.items, stale=stale)
            print(f"  filled in {time.perf_counter() - started:.0f} s")
        runs = [time_plan(url, limit=args.limit, explain=False) for _ in range(args.repeat)]
        if args.explain:
            time_plan(url, limit=args.limit, explain=True)
        if runs:
            print(f"plan_sweep on {args.items:,} items: best {min(runs):.2f} s of {len(runs)} runs")
    finally:
        if admin is not None:
            if args.keep:
                print(f"kept {url}")
                admin.dispose()
            else:
                drop_database(admin, url)


if __name__ == "__main__":
    main()
