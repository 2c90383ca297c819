"""The Celery app built from Settings: the nightly beat schedule, time limits, the Redis
transport options that bring a lost batch back fast, and per-app task settings."""

from __future__ import annotations

from tagger.celery_app import (
    NIGHTLY_RETAG,
    SWEEP,
    TAG_BATCH,
    broker_transport_options,
    create_app,
)
from tagger.settings import Settings


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


def test_each_app_keeps_its_own_task_settings():
    """A second Celery app in one process gets its own retry limit, not the first app's."""
    first = create_app(Settings(task_max_retries=5))
    assert first.tasks[TAG_BATCH].max_retries == 5
    second = create_app(Settings(task_max_retries=2))
    assert second.tasks[TAG_BATCH].max_retries == 2


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
