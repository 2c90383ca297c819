"""Cron expressions for the beat schedule: a malformed one is refused, quoting it."""

from __future__ import annotations

import pytest

from tagger.schedule import parse_cron


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        ("0 2 * *", "must have 5 fields"),
        ("61 2 * * *", "'61 2 * * *'"),
        ("0 25 * * *", "'0 25 * * *'"),
        ("", "must have 5 fields"),
    ],
)
def test_malformed_cron_is_refused(expr, message):
    """A malformed cron expression is a ValueError quoting it."""
    with pytest.raises(ValueError, match=message.replace("*", r"\*")):
        parse_cron(expr)
