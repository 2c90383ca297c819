"""Settings: bad values, and values that cannot work together, are refused with one line
naming the variables; the batch time limits derived from them keep their order."""

from __future__ import annotations

import pytest

from tagger.exceptions import ConfigError
from tagger.settings import Settings, load_settings

VIS, BACKOFF, LIMIT = (
    "TAGGER_VISIBILITY_TIMEOUT",
    "TAGGER_RETRY_BACKOFF_MAX",
    "TAGGER_BATCH_TIME_LIMIT",
)


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({BACKOFF: "300"}, (BACKOFF, VIS)),
        ({LIMIT: "250"}, (LIMIT, BACKOFF, VIS)),
        ({VIS: "90"}, (VIS, BACKOFF)),
    ],
)
def test_impossible_combinations_are_refused_naming_both(monkeypatch, env, names):
    """A back-off or time limit that would outlast the visibility timeout is one-line error."""
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ConfigError) as err:
        load_settings()
    text = str(err.value)
    assert "\n" not in text
    for name in names:
        assert name in text, text


def test_default_time_limits_sit_below_the_visibility_timeout():
    """Soft < hard, and back-off + hard limit < visibility timeout, by default."""
    s = Settings()
    assert 0 < s.soft_time_limit < s.hard_time_limit
    assert s.hard_time_limit + s.retry_backoff_max < s.visibility_timeout


@pytest.mark.parametrize("visibility", [60, 270, 900, 3600])
def test_derived_limits_hold_for_any_valid_visibility_timeout(visibility):
    """The derived limits keep their order for short and long visibility timeouts."""
    s = Settings(visibility_timeout=visibility, retry_backoff_max=5, stall_after=visibility + 1)
    assert 0 < s.soft_time_limit < s.hard_time_limit
    assert s.hard_time_limit + s.retry_backoff_max < visibility


def test_bad_database_url_is_refused_with_its_password_masked(monkeypatch):
    """An unsupported database URL is named in the error without its password."""
    monkeypatch.setenv("TAGGER_DATABASE_URL", "mysql://u:hunter2@db/x")
    with pytest.raises(ConfigError) as err:
        load_settings()
    assert "TAGGER_DATABASE_URL" in str(err.value) and "hunter2" not in str(err.value)


def test_plain_postgresql_url_uses_the_installed_driver():
    """postgresql:// means psycopg2, the driver tagger installs."""
    s = Settings(database_url="postgresql://u@db:5432/x")
    assert s.database_url == "postgresql+psycopg2://u@db:5432/x"


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


def test_ledger_retention_defaults_to_14_days_and_0_keeps_forever(monkeypatch):
    """TAGGER_LEDGER_RETENTION_DAYS is 14 unless set; 0 is accepted (keep forever)."""
    assert load_settings().ledger_retention_days == 14
    monkeypatch.setenv("TAGGER_LEDGER_RETENTION_DAYS", "0")
    assert load_settings().ledger_retention_days == 0


@pytest.mark.parametrize("value", ["-1", "two weeks", "36501"])
def test_bad_ledger_retention_is_refused_by_name(monkeypatch, value):
    """A negative, non-numeric or absurd retention is a one-line error naming the variable."""
    monkeypatch.setenv("TAGGER_LEDGER_RETENTION_DAYS", value)
    with pytest.raises(ConfigError, match="TAGGER_LEDGER_RETENTION_DAYS"):
        load_settings()
