"""tagger on a large catalogue: queries, activation, import and sweep planning, timed side
by side in one run on one Postgres database. Not a test.

    .venv/bin/python benchmarks/scale.py                      # N = 1,000,000 items
    .venv/bin/python benchmarks/scale.py --items 10000000     # N = 10 M (~35 GB of tags)
    .venv/bin/python benchmarks/scale.py --items 10000000 --fill-only    # fill now, and
    .venv/bin/python benchmarks/scale.py --items 10000000 --database NAME  # time later
    TAGGER_BENCH_PG_ADMIN_URL=postgresql+psycopg2://postgres@127.0.0.1:55432/postgres \\
        .venv/bin/python benchmarks/scale.py --items 10000000

It creates a fresh database on the server at TAGGER_BENCH_PG_ADMIN_URL (default: the local
one), builds the schema with `alembic upgrade head`, and fills it by bulk SQL: N items,
a tag for every item from model version v1 and, for 9 in 10 items, a newer one from v2 (the
active version; the other tenth is stale, a roll-out in progress), each tag with every
class score (48 product types) like a real one. Then, timed:
- the README's SQL examples (with LIMIT 100 where they list rows), `tagger tags` filters
  (the SQL of ``query_tags``, plus one real `tagger tags` process), one item's lookup and
  counts by product type: the median of 5, and each one's ratio to the lookup;
- activating v1 (a rollback) and v2 again, each one transaction, checked afterwards;
- sweep planning over the stale tenth (`plan_sweep`, rolled back afterwards);
- `tagger import` of a 1 M-line CSV of new items, a process of its own, with its peak RSS.
The database is dropped at the end unless --keep. The server's settings are printed: the
README's figures name the ones they were measured with.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import redis  # noqa: E402
import sqlalchemy as sa  # noqa: E402
from import_scale import run_import, write_csv  # noqa: E402

ADMIN_URL = os.environ.get(
    "TAGGER_BENCH_PG_ADMIN_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
)
PRODUCTS = [
    f"{kind}_{cut}"
    for kind in ("Dresses", "Tees", "Pants", "Skirts", "Shorts", "Jackets", "Knitwear", "Shirts")
    for cut in ("Basic", "Slim", "Loose", "Long", "Short", "Print")
]  # 48 product types
SETTINGS = ("shared_buffers", "work_mem", "maintenance_work_mem", "max_wal_size", "server_version")

FILL = [
    (
        "items",
        """
INSERT INTO items (item_id, image_uri, title, created_at, updated_at, untagged)
SELECT format('item-%s', lpad(g::text, 9, '0')), format('s3://catalogue/img/%s.jpg', g),
       format('Cotton garment no. %s', g), now() - interval '30 days', now() - interval '30 days',
       false
FROM generate_series(1, :n) g""",
    ),
    (
        "scores",
        """
CREATE TABLE bench_scores AS
SELECT v, jsonb_build_object(
    'gender', jsonb_build_object('MEN', round(random()::numeric, 4),
                                 'WOMEN', round(random()::numeric, 4)),
    'product', (SELECT jsonb_object_agg(p, round(random()::numeric, 4))
                FROM unnest(CAST(:products AS text[])) p WHERE v >= 0)) AS scores
FROM generate_series(0, 999) v""",
    ),
    *(
        (
            f"tags {version}",
            f"""
INSERT INTO tags (item_id, model_version, gender, gender_score, product_type, product_score,
                  scores, tagged_at, product_margin)
SELECT format('item-%s', lpad(g::text, 9, '0')), '{version}',
       CASE WHEN (g * {mult}) % 5 < 2 THEN 'MEN' ELSE 'WOMEN' END, 0.5 + random() / 2,
       (CAST(:products AS text[]))[1 + (g * {mult} + g / 7) % 48], random(),
       b.scores, now() - interval '{age}', random() / 2
FROM generate_series(1, :n) g JOIN bench_scores b ON b.v = g % 1000 WHERE {where}""",
        )
        for version, mult, age, where in (
            ("v1", 7, "20 days", "true"),
            ("v2", 11, "10 days", "g % 10 <> 0"),
        )
    ),
]


def median_ms(run, repeat: int = 5) -> float:
    run()  # warm
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        run()
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def fill(engine: sa.Engine, n: int) -> None:
    from tagger.current import refresh_current_tags
    from tagger.db import make_session_factory
    from tagger.registry import register_model_version

    with make_session_factory(engine).begin() as s:
        for version in ("v1", "v2"):
            register_model_version(
                session=s,
                version=version,
                artifact_uri=f"/models/{version}.keras",
                gender_labels=["MEN", "WOMEN"],
                product_labels=PRODUCTS,
                image_size=224,
                uses_text=True,
                # v1 was the active version before v2 (only versions that are or were
                # active are shown): the stale tenth shows v1's tags
                activate=True,
            )
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        # Foreign keys hold by construction; skipping their per-row triggers halves the fill.
        conn.execute(sa.text("SET session_replication_role = replica"))
        for name, sql in FILL:
            t = time.perf_counter()
            conn.execute(sa.text(sql), {"n": n, "products": PRODUCTS})
            print(f"  fill {name}: {time.perf_counter() - t:.1f} s", flush=True)
        conn.execute(sa.text("DROP TABLE bench_scores"))
        t = time.perf_counter()
        conn.execute(sa.text("VACUUM ANALYZE"))  # what autovacuum does after a bulk load
        print(f"  VACUUM ANALYZE: {time.perf_counter() - t:.1f} s", flush=True)
    t = time.perf_counter()
    with make_session_factory(engine).begin() as s:
        refresh_current_tags(session=s, swap_above=0)
    print(f"  current tags built: {time.perf_counter() - t:.1f} s", flush=True)


def queries(engine: sa.Engine, n: int) -> list[tuple[str, float]]:
    from tagger.db import make_session_factory
    from tagger.tags import TagQuery, query_tags

    rng = random.Random(0)
    ids = [f"item-{rng.randint(1, n):09d}" for _ in range(50)]
    sql = {
        "one item's lookup (WHERE item_id = ...)": (
            "SELECT * FROM current_tags WHERE item_id = :id"
        ),
        "README: confident women's dresses (LIMIT 100)": (
            "SELECT item_id, product_score FROM current_tags WHERE gender = 'WOMEN' "
            "AND product_type = 'Dresses_Basic' AND product_score >= 0.8 "
            "ORDER BY product_score DESC LIMIT 100"
        ),
        "counts by product type (all items)": (
            "SELECT product_type, count(*) FROM current_tags GROUP BY product_type"
        ),
        "README: split by product type, with mean score (all items)": (
            "SELECT product_type, count(*) AS items, round(avg(product_score)::numeric, 3) "
            "FROM current_tags GROUP BY product_type ORDER BY items DESC"
        ),
        "README: low product score, all scores (LIMIT 100)": (
            "SELECT item_id, product_type, product_score, scores->'product' AS all_scores "
            "FROM current_tags WHERE product_score < 0.5 LIMIT 100"
        ),
        "README: second-best product type is close (LIMIT 100)": (
            "SELECT item_id, product_type, product_score, product_margin FROM current_tags "
            "WHERE product_margin < 0.1 LIMIT 100"
        ),
        "README: failures of the last job by reason": (
            "SELECT reason, count(*) FROM failures WHERE job_id = (SELECT max(id) FROM jobs) "
            "GROUP BY reason"
        ),
        "count of one product type": (
            "SELECT count(*) FROM current_tags WHERE product_type = 'Pants_Slim'"
        ),
    }
    since = engine.connect().execute(sa.text("SELECT now() - interval '11 days'")).scalar()
    filters = {
        "tagger tags --gender WOMEN --product-type Dresses_Basic --min-score 0.8 --limit 100": (
            TagQuery(gender="WOMEN", product_type="Dresses_Basic", min_score=0.8, limit=100)
        ),
        "tagger tags --product-type Skirts_Long (a page: 1,000)": TagQuery(
            product_type="Skirts_Long", limit=1000
        ),
        "tagger tags --since <11 days ago> --limit 100": TagQuery(since=since, limit=100),
        "tagger tags --model-version v1 --product-type Pants_Slim --limit 100": TagQuery(
            model_version="v1", product_type="Pants_Slim", limit=100
        ),
        "tagger tags --after item-<middle> (a page: 1,000)": TagQuery(
            after=f"item-{n // 2:09d}", limit=1000
        ),
    }
    sessions = make_session_factory(engine)
    out = []
    with sessions() as s:
        for name, text in sql.items():
            picks = iter(ids * 2)

            def run(text=text, picks=picks):
                return s.execute(sa.text(text), {"id": next(picks)}).all()

            out.append((name, median_ms(run)))
        for name, q in filters.items():
            out.append((name, median_ms(lambda q=q: query_tags(session=s, query=q))))
    return out


def activation(engine: sa.Engine, n: int) -> list[tuple[str, float]]:
    from tagger.db import make_session_factory
    from tagger.registry import activate_model_version

    sessions = make_session_factory(engine)
    out = []
    for version, expect_v2 in (("v1", 0), ("v2", n - n // 10)):
        t = time.perf_counter()
        with sessions.begin() as s:
            activate_model_version(session=s, version=version)
        seconds = time.perf_counter() - t
        with engine.connect() as conn:
            total, distinct, on_v2 = conn.execute(
                sa.text(
                    "SELECT count(*), count(DISTINCT item_id), "
                    "count(*) FILTER (WHERE model_version = 'v2') FROM current_tags"
                )
            ).one()
        ok = total == distinct == n and on_v2 == expect_v2
        label = "rollback to v1" if version == "v1" else "activate v2 again"
        verdict = "right" if ok else "WRONG"
        print(f"  {label}: {seconds:.1f} s; {total:,} rows, {on_v2:,} on v2: {verdict}")
        if not ok:
            raise SystemExit("current_tags is wrong after activation")
        out.append((label, seconds))
    return out


def settle(engine: sa.Engine, what: str, limit: float = 900.0) -> None:
    """Wait until no autovacuum worker is busy on this database (an activation rebuilds
    a 10 M-row table, which autovacuum then visits for a minute or two), so the next
    timing measures tagger, not tagger beside a vacuum. Says how long it waited."""
    t = time.perf_counter()
    quiet = 0
    with engine.connect() as conn:
        while quiet < 3 and time.perf_counter() - t < limit:
            busy = conn.execute(
                sa.text(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND backend_type = 'autovacuum worker'"
                )
            ).scalar()
            # A transaction sees one snapshot of pg_stat_activity: end it to see anew.
            conn.commit()
            quiet = 0 if busy else quiet + 1
            time.sleep(1)
    print(
        f"  (waited {time.perf_counter() - t:.0f} s for autovacuum to finish before {what})",
        flush=True,
    )


def sweep(engine: sa.Engine, url: str) -> float:
    from tagger.db import make_session_factory
    from tagger.settings import Settings
    from tagger.sweep import plan_sweep

    settings = Settings(database_url=url)
    with make_session_factory(engine)() as s:
        t = time.perf_counter()
        plan = plan_sweep(session=s, settings=settings, limit=1_000_000, with_batches=False)
        s.flush()
        seconds = time.perf_counter() - t
        s.rollback()
    print(f"  plan_sweep: {plan.total:,} items ({plan.stale:,} stale) in {seconds:.2f} s")
    return seconds


def import_lines(url: str, lines: int, redis_db: int) -> tuple[float, int]:
    broker = f"redis://127.0.0.1:6379/{redis_db}"
    queue = redis.Redis(host="127.0.0.1", port=6379, db=redis_db)
    queue.flushdb()
    env = {**os.environ, "TAGGER_DATABASE_URL": url, "TAGGER_BROKER_URL": broker}
    env["TAGGER_METRICS_PORT"] = "0"
    with tempfile.TemporaryDirectory(prefix="tagger-scale-") as tmp:
        path = Path(tmp) / "catalogue.csv"
        write_csv(path, lines)
        # Shift them past the filled range so every line is a new item.
        shifted = Path(tmp) / "new.csv"
        with path.open() as src, shifted.open("w") as dst:
            dst.write(src.readline())
            for line in src:
                dst.write("new-" + line)
        path.unlink()
        wall, rss_kib, _, summary = run_import(env, shifted)
    queue.flushdb()
    # Leave the database as filled, so a kept one can be timed again (the job's ledger
    # rows go with it, through the ledger's delete triggers).
    with sa.create_engine(url).begin() as conn:
        conn.execute(sa.text("DELETE FROM items WHERE item_id LIKE 'new-%'"))
        conn.execute(sa.text("DELETE FROM jobs"))
    print(f"  tagger import: {summary}")
    return wall, rss_kib


def time_import(url: str, lines: int, redis_db: int) -> None:
    print(f"\nimport of {lines:,} new items:")
    wall, rss = import_lines(url, lines, redis_db)
    print(f"  {wall:.1f} s, {lines / wall:,.0f} items/s, peak RSS {rss / 1024:.0f} MB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--import-lines", type=int, default=1_000_000, help="0: no import")
    parser.add_argument("--redis-db", type=int, default=11)
    parser.add_argument("--keep", action="store_true", help="keep the database; print its URL")
    parser.add_argument("--fill-only", action="store_true", help="fill, keep, time nothing")
    parser.add_argument("--import-only", action="store_true", help="time the import alone")
    parser.add_argument("--database", help="a database this script filled and kept: time only")
    args = parser.parse_args()

    from tagger.db import make_engine, upgrade

    n = args.items
    name = args.database or f"tagger_scale_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    args.keep = args.keep or args.fill_only or bool(args.database)
    admin = sa.create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    url = sa.engine.make_url(ADMIN_URL).set(database=name).render_as_string(False)
    with admin.connect() as conn:
        if not args.database:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        conf = {k: conn.execute(sa.text(f"SHOW {k}")).scalar() for k in SETTINGS}
    print(
        f"Postgres: {conf.pop('server_version')}; " + ", ".join(f"{k}={v}" for k, v in conf.items())
    )
    print(f"machine: {os.cpu_count()} cores; N = {n:,} items, {n + n - n // 10:,} tags")
    engine = make_engine(url)
    try:
        if not args.database:
            upgrade(url)
            t = time.perf_counter()
            fill(engine, n)
            print(f"filled in {time.perf_counter() - t:.0f} s", flush=True)
        if args.fill_only:
            return
        if args.import_only:
            time_import(url, args.import_lines, args.redis_db)
            return
        rows = queries(engine, n)
        lookup = rows[0][1]
        print(f"\n{'query (median of 5)':<88} {'ms':>9} {'x lookup':>9}")
        for label, ms in rows:
            print(f"{label:<88} {ms:9.2f} {ms / lookup:9.1f}")
        cli = [
            str(Path(sys.executable).with_name("tagger")),
            "tags",
            "--product-type",
            "Dresses_Basic",
            "--gender",
            "WOMEN",
            "--min-score",
            "0.8",
            "--limit",
            "100",
        ]
        env = {**os.environ, "TAGGER_DATABASE_URL": url, "TAGGER_METRICS_PORT": "0"}
        t = time.perf_counter()
        subprocess.run(cli, env=env, check=True, capture_output=True)
        print(
            f"one `tagger tags ... --limit 100` process, start to exit: "
            f"{time.perf_counter() - t:.2f} s"
        )
        print("\nactivation (one transaction each):")
        activation(engine, n)
        print("\nsweep planning:")
        settle(engine, "the sweep")
        sweep(engine, url)
        if args.import_lines:
            settle(engine, "the import")
            time_import(url, args.import_lines, args.redis_db)
    finally:
        engine.dispose()
        if args.keep:
            print(f"kept: {url}")
        else:
            with admin.connect() as conn:
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


if __name__ == "__main__":
    main()
