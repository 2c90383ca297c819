"""Real services for the tests: a throw-away Postgres database, a Redis db, a moto S3 server.

Nothing here is an in-process fake: Postgres and Redis are the servers on 127.0.0.1, and
S3 is moto's *server mode* in its own process, spoken to over HTTP by boto3.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import redis
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent
PG_ADMIN_URL = os.environ.get(
    "TAGGER_TEST_PG_ADMIN_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
)
REDIS_HOST = os.environ.get("TAGGER_TEST_REDIS_HOST", "127.0.0.1")
REDIS_PORT = int(os.environ.get("TAGGER_TEST_REDIS_PORT", "6379"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def postgres_database() -> Iterator[str]:
    """Create an empty database with a unique name, yield its URL, drop it afterwards."""
    name = f"tagger_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = sa.engine.make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    try:
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def alembic_upgrade(url: str) -> None:
    """Build the schema the way production does: `alembic upgrade head`."""
    from tagger.db import upgrade

    upgrade(url)


def redis_db_number() -> int:
    """A Redis db number for this test process (override with TAGGER_TEST_REDIS_DB).

    Under ``pytest -n N`` (pytest-xdist) each worker process ``gwI`` gets its own db:
    numbered from the run's controller process, so the run's workers never share one.
    """
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    index = int(worker[2:]) if worker.startswith("gw") else 0
    if "TAGGER_TEST_REDIS_DB" in os.environ:
        return int(os.environ["TAGGER_TEST_REDIS_DB"]) + index
    run = os.getppid() if worker else os.getpid()
    return 1 + (run + index) % 14  # keep db 0 and 15 for humans


def redis_client(db: int) -> redis.Redis:
    return redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=db)


@contextmanager
def moto_server() -> Iterator[str]:
    """Run moto's S3 server in a child process on a free loopback port; yield its URL."""
    port = free_port()
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError("moto server did not start") from None
            time.sleep(0.1)
    try:
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
