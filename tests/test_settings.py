"""Settings that cannot work together are refused with one line naming both variables, and
the batch time limits and broker options derived from them bring a lost batch back fast."""

from __future__ import annotations

import pytest

from tagger.celery_app import broker_transport_options, create_app
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


def test_default_brings_a_lost_batch_back_within_five_minutes():
    """Visibility timeout plus one restore sweep is at most 300 s with the defaults."""
    opts = broker_transport_options(Settings())
    sweep = opts["unacked_restore_interval"] * opts["unacked_restore_throttle"]
    assert opts["visibility_timeout"] + sweep <= 300


def test_celery_app_applies_limits_and_redis_health_options():
    """The app carries the time limits, re-queues hard-limit kills, and checks the link."""
    s = Settings(visibility_timeout=600, batch_time_limit=400, retry_backoff_max=60)
    conf = create_app(s).conf
    assert (conf.task_time_limit, conf.task_soft_time_limit) == (400, s.soft_time_limit)
    assert conf.task_acks_late and conf.task_reject_on_worker_lost
    assert conf.task_acks_on_timeout is False
    opts = conf.broker_transport_options
    assert opts["visibility_timeout"] == 600
    assert opts["socket_timeout"] == s.redis_socket_timeout
    assert opts["health_check_interval"] == s.redis_health_check_interval
    assert opts["socket_keepalive"] is True


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
