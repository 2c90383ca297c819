"""The review page on a large catalogue: filtered grid pages through a real `tagger web`
process, timed side by side in one run. Not a test.

    .venv/bin/python benchmarks/review_page.py                    # fills 1,000,000 items
    .venv/bin/python benchmarks/review_page.py --database NAME    # one scale.py kept

It uses a database filled by benchmarks/scale.py's bulk SQL (N items, every tag with all
48 product-type scores, 9 in 10 items tagged by the active v2, product margins uniform in
[0, 0.5)), gives both versions the default review thresholds (a product margin under 0.2,
a gender score under 0.75: 70% of these items need review, their gender scores being
uniform in [0.5, 1)), starts `tagger web`
as the README starts it, and times over HTTP, median of 9 after one warm-up:
- grid pages of 48 images (each with a presigned S3 URL) for a set of filters, the first
  page and one 20 pages deep (followed through the pages' own "next" links);
- one item page;
- the grid's SQL alone (``tagger.web.queries.grid_page``) in this process, to show what
  the database costs and what the page adds.
The database is dropped at the end unless it was given, or --keep.
"""

from __future__ import annotations

import argparse
import html
import os
import re
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import sqlalchemy as sa  # noqa: E402
from scale import ADMIN_URL, fill  # noqa: E402

CASES = [
    ("review queue (the default page)", "/"),
    ("review queue, one product type", "/?product_type=Dresses_Basic"),
    (
        "review queue, product type + gender + score 0.2-0.6",
        "/?product_type=Dresses_Basic&gender=WOMEN&min_score=0.2&max_score=0.6",
    ),
    ("review queue, the stale tenth (version v1)", "/?version=v1"),
    ("all items, product type, score >= 0.8", "/?queue=all&product_type=Tees_Slim&min_score=0.8"),
    ("all items, product type, by item id", "/?queue=all&product_type=Tees_Slim&sort=item"),
    ("all items, women, by item id", "/?queue=all&gender=WOMEN&sort=item"),
]
NEXT = re.compile(r'href="([^"]*(?:[?&]|&amp;)after=[^"]*)"')


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(base: str, path: str) -> tuple[float, bytes]:
    t = time.perf_counter()
    with urllib.request.urlopen(base + path, timeout=60) as resp:
        body = resp.read()
        assert resp.status == 200, (path, resp.status)
    return (time.perf_counter() - t) * 1000, body


def median_get(base: str, path: str, repeat: int = 9) -> tuple[float, float, bytes]:
    get(base, path)  # warm
    times, body = [], b""
    for _ in range(repeat):
        ms, body = get(base, path)
        times.append(ms)
    return statistics.median(times), max(times), body


def deep(base: str, path: str, pages: int) -> str:
    """The path of the page ``pages`` deep, following each page's own next link."""
    for _ in range(pages):
        _, body = get(base, path)
        found = NEXT.search(body.decode())
        if not found:
            break
        path = html.unescape(found.group(1))
    return path


def start_web(url: str, port: int) -> subprocess.Popen:
    env = {
        **os.environ,
        "TAGGER_DATABASE_URL": url,
        # Presigning signs locally: no S3 server is contacted, but it needs credentials.
        "TAGGER_S3_ENDPOINT_URL": "http://127.0.0.1:9000",
        "AWS_ACCESS_KEY_ID": os.environ.get("AWS_ACCESS_KEY_ID", "bench"),
        "AWS_SECRET_ACCESS_KEY": os.environ.get("AWS_SECRET_ACCESS_KEY", "bench-secret"),
        "TAGGER_LOG_LEVEL": "WARNING",
    }
    tagger = str(Path(sys.executable).with_name("tagger"))
    proc = subprocess.Popen([tagger, "web", "--port", str(port)], env=env)
    for _ in range(300):
        try:
            get(f"http://127.0.0.1:{port}", "/healthz")
            return proc
        except OSError:
            if proc.poll() is not None:
                raise SystemExit("tagger web exited") from None
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("tagger web did not answer in 30 s")


def sql_alone(url: str) -> list[tuple[str, float]]:
    from tagger.db import make_engine, make_session_factory
    from tagger.web.queries import Filters, grid_page

    engine = make_engine(url)
    sessions = make_session_factory(engine)
    out = []
    for label, filters in [
        ("review queue", Filters()),
        ("review queue, one product type", Filters(product_type="Dresses_Basic")),
        (
            "all items, product type, score >= 0.8",
            Filters(needs_review=False, product_type="Tees_Slim", min_score=0.8),
        ),
    ]:
        times = []
        for _ in range(10):
            with sessions() as s:
                t = time.perf_counter()
                page = grid_page(session=s, filters=filters)
                times.append((time.perf_counter() - t) * 1000)
            assert len(page.rows) == 48
        out.append((label, statistics.median(times[1:])))
    engine.dispose()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--database", help="a database benchmarks/scale.py filled and kept")
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()

    from tagger.db import ModelVersion, make_engine, make_session_factory, upgrade
    from tagger.thresholds import Defaults, store_thresholds

    name = args.database or f"tagger_review_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    admin = sa.create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    url = sa.engine.make_url(ADMIN_URL).set(database=name).render_as_string(False)
    if not args.database:
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    engine = make_engine(url)
    web = None
    try:
        if not args.database:
            upgrade(url)
            fill(engine, args.items)
        else:
            upgrade(url)  # a database kept before the review schema existed
        with make_session_factory(engine).begin() as s:
            for version in s.scalars(sa.select(ModelVersion)):
                store_thresholds(
                    session=s, version=version, fitted=None, defaults=Defaults(0.2, 0.75)
                )
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(sa.text("ANALYZE"))
            items = conn.execute(sa.text("SELECT count(*) FROM current_tag_rows")).scalar()
            review = conn.execute(
                sa.text("SELECT count(*) FROM current_tags WHERE needs_review")
            ).scalar()
        print(f"machine: {os.cpu_count()} cores; {items:,} items, {review:,} need review")
        port = free_port()
        web = start_web(url, port)
        base = f"http://127.0.0.1:{port}"
        rows = []
        for label, path in CASES:
            ms, worst, body = median_get(base, path)
            rows.append((label + ", page 1", ms, worst, body.count(b"<img")))
            page20 = deep(base, path, 20)
            if page20 != path:
                ms, worst, body = median_get(base, page20)
                rows.append((label + ", page 21", ms, worst, body.count(b"<img")))
        with engine.connect() as conn:
            one = conn.execute(sa.text("SELECT item_id FROM current_tags LIMIT 1")).scalar()
        ms, worst, body = median_get(base, f"/item?id={one}")
        rows.append(("one item's page (every class's bar)", ms, worst, body.count(b"<img")))
        fastest = min(r[1] for r in rows)
        print(f"\n{'page over HTTP (median of 9)':<72} {'ms':>7} {'max':>7} {'imgs':>5} {'x':>5}")
        for label, ms, worst, imgs in rows:
            print(f"{label:<72} {ms:7.1f} {worst:7.1f} {imgs:5d} {ms / fastest:5.1f}")
        print(f"\n{'the grid SQL alone, in process (median of 9)':<72} {'ms':>7}")
        for label, ms in sql_alone(url):
            print(f"{label:<72} {ms:7.1f}")
    finally:
        if web is not None:
            web.terminate()
            web.wait(10)
        engine.dispose()
        if args.database or args.keep:
            print(f"kept: {url}")
        else:
            with admin.connect() as conn:
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


if __name__ == "__main__":
    main()
