"""Running tagger as users do: the CLI (in a process of its own, or in this one) and real
`celery worker` processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import pytest
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


def tagger_here(
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
    env: Mapping[str, str],
    *args: str,
) -> subprocess.CompletedProcess:
    """`tagger ARGS` run in this process (``tagger.cli.run``) with exactly ``env`` as the
    environment, its output captured as ``tagger`` above returns it: no interpreter start,
    no imports, so an error-mapping check takes milliseconds instead of seconds.

    The test's own environment is back as soon as the command returns: only the command
    sees ``env``, and nothing the test builds from ``os.environ`` afterwards (a worker's
    environment, ``Settings()``) inherits it."""
    from tagger.cli import run

    with monkeypatch.context() as patch:
        # The command reads its settings from the environment when it runs, as in a process.
        for name in set(os.environ) - set(env):
            patch.delenv(name)
        for name, value in env.items():
            patch.setenv(name, value)
        capfd.readouterr()  # drop what the test printed before
        code = run(args)
        out, err = capfd.readouterr()
    return subprocess.CompletedProcess(["tagger", *args], code, out, err)


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
