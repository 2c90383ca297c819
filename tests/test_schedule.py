"""Settings and the beat schedule: defaults, and bad values refused with their name."""

from __future__ import annotations

import pytest

from tagger.celery_app import NIGHTLY_RETAG, SWEEP, create_app
from tagger.exceptions import ConfigError
from tagger.schedule import parse_cron
from tagger.settings import Settings, load_settings


def test_nightly_retag_runs_at_two_utc_by_default():
    """The default schedule sends the sweep task daily at 02:00 UTC."""
    app = create_app(Settings())
    entry = app.conf.beat_schedule[NIGHTLY_RETAG]
    assert entry["task"] == SWEEP and app.conf.timezone == "UTC"
    cron = entry["schedule"]
    assert cron.hour == {2} and cron.minute == {0}
    assert cron.day_of_week == set(range(7))


def test_cron_from_settings_is_used():
    """TAGGER_RETAG_CRON changes when beat fires."""
    cron = create_app(Settings(retag_cron="30 4 * * 1-5")).conf.beat_schedule[NIGHTLY_RETAG]
    assert cron["schedule"].hour == {4} and cron["schedule"].day_of_week == {1, 2, 3, 4, 5}


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


def test_bad_environment_names_each_variable(monkeypatch):
    """load_settings reports every bad TAGGER_* variable by name, in one line."""
    monkeypatch.setenv("TAGGER_RETAG_CRON", "every night")
    monkeypatch.setenv("TAGGER_DATABASE_URL", "mysql://x")
    with pytest.raises(ConfigError) as err:
        load_settings()
    text = str(err.value)
    assert "TAGGER_RETAG_CRON" in text and "TAGGER_DATABASE_URL" in text and "\n" not in text


def test_stall_window_must_exceed_visibility_timeout():
    """A job cannot be called stalled before Redis would even re-deliver its batches."""
    with pytest.raises(ValueError, match="TAGGER_STALL_AFTER"):
        Settings(visibility_timeout=3600, stall_after=600)


def test_secrets_are_masked_in_redacted_settings():
    """Passwords in the database and broker URLs never appear in what is logged."""
    s = Settings(database_url="postgresql://u:hunter2@db/x", broker_url="redis://:s3cret@r:6379/0")
    text = str(s.redacted())
    assert "hunter2" not in text and "s3cret" not in text and "***" in text


def test_each_app_keeps_its_own_task_settings():
    """A second Celery app in one process gets its own retry limit, not the first app's."""
    from tagger.celery_app import TAG_BATCH

    first = create_app(Settings(task_max_retries=5))
    assert first.tasks[TAG_BATCH].max_retries == 5
    second = create_app(Settings(task_max_retries=2))
    assert second.tasks[TAG_BATCH].max_retries == 2
