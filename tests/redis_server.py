"""A private `redis-server` for tests that need Redis really down (or restarted).

The machine's shared Redis (6379) is never stopped: a test that wants an outage starts its
own server on a free loopback port, stops it, and starts it again on the same port.
Nothing is persisted, so a restarted server comes back empty, like a Redis that crashed.

    with redis_server(password="s3cret") as server:
        env["TAGGER_BROKER_URL"] = server.url
        server.stop()   # now really down: connections are refused
        server.start()  # back, on the same port
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import redis

from tests.services import free_port

STARTUP_TIMEOUT = 15.0


class RedisServer:
    """One redis-server process at a time, always on the same port and with the same
    password; ``start`` and ``stop`` may be called any number of times."""

    def __init__(self, *, port: int | None = None, password: str | None = None, db: int = 0):
        if shutil.which("redis-server") is None:
            raise RuntimeError("redis-server is not installed")
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.password = password
        self.db = db
        self._dir = Path(tempfile.mkdtemp(prefix="redis-server-"))
        self._proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        """The URL clients use, password included (mask it before showing it)."""
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}{self.host}:{self.port}/{self.db}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def client(self) -> redis.Redis:
        return redis.Redis(host=self.host, port=self.port, db=self.db, password=self.password)

    def start(self) -> None:
        """Start the server and wait until it answers PING."""
        if self.running:
            return
        args = ["redis-server", "--port", str(self.port), "--bind", self.host]
        # No RDB/AOF files, no background saves: a restart is a clean, empty server.
        args += ["--save", "", "--appendonly", "no", "--dir", str(self._dir)]
        if self.password:
            args += ["--requirepass", self.password]
        self._proc = subprocess.Popen(
            args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=self._dir
        )
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while True:
            try:
                with self.client() as c:
                    c.ping()
                return
            except redis.exceptions.RedisError:
                if self._proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"redis-server did not start on port {self.port}") from None
                time.sleep(0.05)

    def stop(self) -> None:
        """Stop the server and wait until its port refuses connections."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        deadline = time.monotonic() + 5
        while self._accepting() and time.monotonic() < deadline:
            time.sleep(0.05)

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self._dir, ignore_errors=True)

    def _accepting(self) -> bool:
        try:
            with socket.create_connection((self.host, self.port), timeout=0.2):
                return True
        except OSError:
            return False


@contextmanager
def redis_server(*, password: str | None = None, db: int = 0) -> Iterator[RedisServer]:
    """A started private redis-server on a free port, stopped (and cleaned up) afterwards."""
    server = RedisServer(password=password, db=db)
    try:
        server.start()
        yield server
    finally:
        server.close()
