"""The Celery application, made by a factory so that settings are read by the entry point
(`tagger worker`, `tagger import`, tests) and never at import time."""

from __future__ import annotations

from celery import Celery

from tagger.schedule import parse_cron
from tagger.settings import Settings

TAG_BATCH = "tagger.tag_batch"
SWEEP = "tagger.sweep"
NIGHTLY_RETAG = "nightly-retag"


def create_app(settings: Settings | None = None) -> Celery:
    settings = settings or Settings()
    app = Celery("tagger", set_as_current=False)
    app.conf.update(
        broker_url=settings.broker_url,
        broker_connection_retry_on_startup=True,
        # JSON only: a pickled message from a compromised broker is remote code execution.
        task_serializer="json",
        accept_content=["json"],
        # Job progress lives in Postgres; nothing is written back to the broker.
        task_ignore_result=True,
        result_backend=None,
        # At-least-once: ack after the batch is written, and if the process running it dies
        # (OOM, kill -9), give the message back instead of acking it as done.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        # Redis re-delivers an unacked message after this; it must exceed the longest batch
        # or a slow batch is run twice at once.
        broker_transport_options={"visibility_timeout": settings.visibility_timeout},
        worker_cancel_long_running_tasks_on_connection_loss=True,
        task_default_queue=settings.queue,
        worker_hijack_root_logger=True,
        worker_redirect_stdouts=False,
    )
    # The nightly re-tag sweep; run exactly one beat (`tagger beat`) per deployment. Two
    # beats firing at once are harmless all the same: the sweep takes a Postgres lock.
    app.conf.timezone = "UTC"
    app.conf.beat_schedule = {
        NIGHTLY_RETAG: {
            "task": SWEEP,
            "schedule": parse_cron(settings.retag_cron),
            "kwargs": {"source": "beat", "limit": settings.retag_limit},
            "options": {"queue": settings.queue},
        }
    }
    app.tagger_settings = settings  # type: ignore[attr-defined]

    from tagger import tasks

    tasks.register(app)
    return app
