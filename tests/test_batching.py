"""Batching: fixed-size chunks and order-preserving de-duplication."""

import pytest

from tagger.batching import chunked, unique


def test_chunked_splits_with_a_short_tail():
    """Chunks hold `size` items; the last one holds the rest."""
    assert list(chunked(list(range(7)), 3)) == [[0, 1, 2], [3, 4, 5], [6]]
    assert list(chunked([], 3)) == []


def test_chunked_rejects_zero():
    """A batch size below one is an error, not an infinite loop."""
    with pytest.raises(ValueError, match="at least 1"):
        list(chunked([1], 0))


def test_unique_keeps_first_seen_order():
    """Repeated ids are dropped, order kept."""
    assert unique(["b", "a", "b", "c", "a"]) == ["b", "a", "c"]
