"""A cap on the pixels being decoded at once across threads: decode memory follows the
budget, not the batch's images. Pure: the standard library only."""

from __future__ import annotations

import collections
import threading
from collections.abc import Iterator
from contextlib import contextmanager


class PixelBudget:
    """Lets threads hold at most ``limit`` pixels at once; a bigger request runs alone.

    First come, first served: a big image waiting for room is not overtaken forever by
    small ones, so every decode finishes and the wait is bounded by the batch.
    """

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"pixel budget must be positive, got {limit}")
        self.limit = limit
        self.in_use = 0
        self._cond = threading.Condition()
        self._queue: collections.deque[object] = collections.deque()

    @contextmanager
    def hold(self, pixels: int) -> Iterator[None]:
        ticket = object()
        with self._cond:
            self._queue.append(ticket)
            try:
                while self._queue[0] is not ticket or (
                    self.in_use and self.in_use + pixels > self.limit
                ):
                    self._cond.wait()
            except BaseException:
                # Interrupted while waiting: leave the queue, or everyone behind us waits.
                self._queue.remove(ticket)
                self._cond.notify_all()
                raise
            self._queue.popleft()
            self.in_use += pixels
            self._cond.notify_all()  # the next in line may fit as well
        try:
            yield
        finally:
            with self._cond:
                self.in_use -= pixels
                self._cond.notify_all()
