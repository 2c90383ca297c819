"""Running tagger as users do: the CLI and real `celery worker` processes."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import sqlalchemy as sa

from tagger.db import Job


def tagger(env: dict[str, str], *args: str, timeout: int = 180) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tagger.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def start_worker(env: dict[str, str], name: str, log: Path, *extra: str) -> subprocess.Popen:
    """`tagger worker` in its own process (prefork pool unless ``extra`` says otherwise)."""
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tagger.cli",
            "worker",
            "-n",
            f"{name}@%h",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            *extra,
        ],
        env=env,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
    )


def stop(workers: list[subprocess.Popen]) -> None:
    for w in workers:
        if w.poll() is None:
            w.send_signal(signal.SIGTERM)
    for w in workers:
        try:
            w.wait(timeout=30)
        except subprocess.TimeoutExpired:
            w.kill()


def wait_for_job(engine: sa.Engine, job_id: int, workers, timeout: float = 420):
    """Poll Postgres until the job is finished; fail if a worker dies or time runs out."""
    deadline = time.monotonic() + timeout
    row = None
    while time.monotonic() < deadline:
        with engine.connect() as conn:
            row = conn.execute(sa.select(Job.__table__).where(Job.id == job_id)).one_or_none()
        if row is not None and row.status == "finished":
            return row
        assert all(w.poll() is None for w in workers), "a worker exited early"
        time.sleep(0.5)
    raise AssertionError(f"job {job_id} did not finish: {row}")
