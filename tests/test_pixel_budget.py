"""PixelBudget: first come, first served; an oversized request runs alone; pixels are
given back on error. A pure unit test of the threading rule (decode_many's use of it is
in tests/test_images.py)."""

from __future__ import annotations

import threading
import time

import pytest

from tagger.pixel_budget import PixelBudget


def test_pixel_budget_is_first_come_first_served():
    """A small request that would fit waits behind an earlier big one, so nothing starves."""
    budget = PixelBudget(10)
    order: list[str] = []

    def take(name: str, pixels: int) -> None:
        with budget.hold(pixels):
            order.append(name)

    def queued(n: int) -> None:
        deadline = time.monotonic() + 10
        while len(budget._queue) < n and time.monotonic() < deadline:
            time.sleep(0.001)

    with budget.hold(6):
        big = threading.Thread(target=take, args=("big", 8))
        big.start()
        queued(1)
        small = threading.Thread(target=take, args=("small", 2))
        small.start()
        queued(2)
        assert order == []
    big.join(10)
    small.join(10)
    assert order == ["big", "small"]
    assert budget.in_use == 0


def test_pixel_budget_runs_an_oversized_request_alone_and_frees_on_error():
    """A request bigger than the whole budget proceeds when nothing else holds pixels."""
    budget = PixelBudget(10)
    with pytest.raises(RuntimeError), budget.hold(50):
        assert budget.in_use == 50
        raise RuntimeError
    assert budget.in_use == 0
