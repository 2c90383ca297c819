"""`tagger import` at catalogue scale: wall time, items/s and peak RSS of the real command
importing an N-line CSV into Postgres and publishing its batches to Redis. Not a test.

    .venv/bin/python benchmarks/import_scale.py                    # 1,000,000 lines
    .venv/bin/python benchmarks/import_scale.py --lines 100000
    .venv/bin/python benchmarks/import_scale.py --lines 10000000   # ~0.6 GB of CSV in /tmp

It writes the CSV into a temporary folder (deleted afterwards), creates a fresh database
on the local server (as tests/services.py does), migrates it with Alembic
(tagger.db.upgrade), registers a dummy active model version row, flushes Redis db
--redis-db, then runs `tagger import FILE --batch-size 64` as a process of its own with
TAGGER_DATABASE_URL and TAGGER_BROKER_URL set, twice: the first import (every item new,
every batch published), then, once every item has a tag from the active version (written
with SQL, as if workers had tagged them, and made current as activation does), the same
file again (nothing to queue; --first-only skips it). For
each it prints the wall time, items/s and the peak RSS of the import process (getrusage
of the child, from wait4), and checks the job's total and the messages on the queue. The
database is dropped and the Redis db flushed afterwards.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import redis  # noqa: E402
import sqlalchemy as sa  # noqa: E402
from sqlalchemy.orm import Session  # noqa: E402

from tagger.current import refresh_current_tags  # noqa: E402

PG_ADMIN_URL = os.environ.get(
    "TAGGER_TEST_PG_ADMIN_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
)
BATCH_SIZE = 64
TAG_ALL = """
    INSERT INTO tags (item_id, model_version, gender, gender_score, product_type,
                      product_score, scores, tagged_at)
    SELECT item_id, 'bench', 'MEN', 0.9, 'Dresses', 0.8, '{}', now() FROM items
"""


def write_csv(path: Path, lines: int) -> None:
    """item_id,image_uri,title: ids in catalogue order, a title per item."""
    with path.open("w", encoding="utf-8") as f:
        f.write("item_id,image_uri,title\n")
        step = 100_000
        for start in range(0, lines, step):
            f.write(
                "".join(
                    f"item-{i:09d},s3://bench/img/{i % 1000:03d}/{i}.jpg,Cotton dress no. {i}\n"
                    for i in range(start, min(start + step, lines))
                )
            )


# `tagger import` as the console script runs it (tagger.cli.run), with the importer's and
# the publisher's INFO lines on: they time each phase of the import (PHASES).
COMMAND = """
import logging, sys
from tagger.cli import run
logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
for name in ("tagger.importer", "tagger.enqueue"):
    logging.getLogger(name).setLevel(logging.INFO)
sys.exit(run(sys.argv[1:]))
"""
PHASES = ("INFO tagger.importer: import of", "INFO tagger.enqueue: job")


def run_import(env: dict[str, str], csv_path: Path) -> tuple[float, int, str, str]:
    """Wall seconds, peak RSS (KiB) and output of one `tagger import` process (the summary
    line; the phase timings are printed as they come)."""
    command = [sys.executable, "-c", COMMAND, "import", str(csv_path)]
    command += ["--batch-size", str(BATCH_SIZE)]
    started = time.perf_counter()
    proc = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    # The output is a few lines: reading it after the exit cannot fill a pipe.
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    stdout, stderr = proc.stdout.read(), proc.stderr.read()  # type: ignore[union-attr]
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"tagger import failed ({proc.returncode}):\n{stderr}")
    lines = stderr.strip().splitlines()
    for line in lines:
        if line.startswith(PHASES):
            print(f"  phases: {line.split(': ', 1)[1]}")
    summary = [line for line in lines if not line.startswith(("INFO", "WARNING"))]
    return wall, usage.ru_maxrss, stdout.strip(), summary[-1] if summary else ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=1_000_000, help="catalogue lines")
    parser.add_argument("--redis-db", type=int, default=11)
    parser.add_argument(
        "--first-only", action="store_true", help="time the first import only (no re-import)"
    )
    args = parser.parse_args()

    from tagger.db import upgrade

    name = f"tagger_import_bench_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    url = sa.engine.make_url(PG_ADMIN_URL).set(database=name).render_as_string(False)
    broker = f"redis://127.0.0.1:6379/{args.redis_db}"
    queue_client = redis.Redis(host="127.0.0.1", port=6379, db=args.redis_db)
    with tempfile.TemporaryDirectory(prefix="tagger-import-bench-") as tmp:
        csv_path = Path(tmp) / "catalogue.csv"
        t = time.perf_counter()
        write_csv(csv_path, args.lines)
        size_mb = csv_path.stat().st_size / 1e6
        print(f"{args.lines:,} lines, {size_mb:.0f} MB written in {time.perf_counter() - t:.1f} s")
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        try:
            upgrade(url)
            engine = sa.create_engine(url)
            with engine.begin() as conn:
                conn.execute(
                    sa.text(
                        "INSERT INTO model_versions (version, artifact_uri, gender_labels, "
                        "product_labels, image_size, uses_text, is_active, created_at, "
                        "activated_at) VALUES ('bench', 's3://bench/model', '[\"MEN\",\"WOMEN\"]', "
                        '\'["Dresses","Pants"]\', 224, false, true, now(), now())'
                    )
                )
            env = {
                **os.environ,
                "TAGGER_DATABASE_URL": url,
                "TAGGER_BROKER_URL": broker,
                "TAGGER_METRICS_PORT": "0",
            }
            from tagger.settings import Settings

            queue = Settings(database_url=url, broker_url=broker).queue
            expected_batches = -(-args.lines // BATCH_SIZE)
            for label, queued in (("first import", expected_batches), ("same file again", 0)):
                queue_client.flushdb()
                wall, rss_kib, job, summary = run_import(env, csv_path)
                messages = queue_client.llen(queue)
                with engine.connect() as conn:
                    total = conn.scalar(sa.text("SELECT total FROM jobs WHERE id = :j"), {"j": job})
                print(
                    f"{label}: {wall:.2f} s, {args.lines / wall:,.0f} items/s, "
                    f"peak RSS {rss_kib / 1024:.0f} MiB; job {job} total {total}, "
                    f"{messages:,} messages on the queue"
                )
                print(f"  tagger: {summary}")
                if messages != queued:
                    raise SystemExit(f"expected {queued} messages on the queue, found {messages}")
                if label == "first import":
                    # What the workers would leave behind: a tag from the active version
                    # for every item, so the same file again has nothing to queue.
                    if args.first_only:
                        break
                    with engine.begin() as conn, Session(bind=conn) as session:
                        conn.execute(sa.text(TAG_ALL))
                        # Shown and fresh, as activation makes tags written with SQL.
                        refresh_current_tags(session=session)
            engine.dispose()
        finally:
            queue_client.flushdb()
            with admin.connect() as conn:
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            admin.dispose()


if __name__ == "__main__":
    main()
