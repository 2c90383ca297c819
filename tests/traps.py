"""Images that act on the process reading them: a named pipe (FIFO) in place of an image
file. A worker that fetches it blocks in open() until the test's side opens the pipe, so
the test knows exactly which process is reading that item, and when, and can kill it (a
poison item: the process dies every time it meets it) or leave it hanging (a hung batch).
"""

from __future__ import annotations

import errno
import os
import signal
import threading
import time
from pathlib import Path


def readers_of(path: Path) -> list[int]:
    """Pids of the processes that have ``path`` open (from /proc/*/fd)."""
    target = str(path)
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            fds = list((proc / "fd").iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(fd) == target:
                    pids.append(int(proc.name))
                    break
            except OSError:
                continue
    return pids


class FifoTrap:
    """A FIFO at ``path``; each time a process opens it to read, ``mode`` decides:
    ``"kill"`` SIGKILLs the reader, ``"hang"`` keeps the pipe open and silent forever."""

    def __init__(self, path: Path, mode: str):
        if mode not in ("kill", "hang"):
            raise ValueError(mode)
        self.path = path
        self.mode = mode
        self.kills = 0
        self.opens = 0
        self._held: list[int] = []
        self._stop = threading.Event()
        os.mkfifo(path)
        self._thread = threading.Thread(target=self._loop, name=f"trap-{path.name}", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                # Non-blocking open for writing fails with ENXIO until a reader has it open.
                fd = os.open(self.path, os.O_WRONLY | os.O_NONBLOCK)
            except OSError as e:
                if e.errno != errno.ENXIO:
                    raise
                time.sleep(0.02)
                continue
            self.opens += 1
            if self.mode == "hang":
                # Never written, never closed: this read and every later one (a writer is
                # present, so their open() returns at once) block until the test ends.
                self._held.append(fd)
                self._stop.wait()
                return
            self._kill_readers()
            os.close(fd)
            while readers_of(self.path) and not self._stop.is_set():
                time.sleep(0.02)

    def _kill_readers(self) -> None:
        # The reader's open() returns just after ours; its fd shows in /proc a moment later.
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            pids = readers_of(self.path)
            if pids:
                for pid in pids:
                    try:
                        os.kill(pid, signal.SIGKILL)
                        self.kills += 1
                    except ProcessLookupError:
                        pass
                return
            time.sleep(0.01)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        for fd in self._held:
            os.close(fd)
        self.path.unlink(missing_ok=True)
