"""The Celery application, made by a factory so that settings are read by the entry point
(`tagger worker`, `tagger import`, tests) and never at import time. Why each setting is
what it is: docs/architecture.md, "The task contract"."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from celery import Celery
from celery.signals import worker_init, worker_ready, worker_shutdown
from celery.worker.control import inspect_command

from tagger import metrics, tasks
from tagger.messages import SWEEP, TAG_BATCH
from tagger.schedule import parse_cron
from tagger.settings import Settings

__all__ = [
    "NIGHTLY_RETAG",
    "SWEEP",
    "TAGGER_METRICS",
    "TAG_BATCH",
    "QueueDepth",
    "broker_transport_options",
    "create_app",
    "queue_depth",
    "worker_metrics",
]

NIGHTLY_RETAG = "nightly-retag"
# The remote-control command every worker answers with its batch metrics (`tagger stats`;
# also `celery -A tagger.app inspect tagger_metrics`).
TAGGER_METRICS = "tagger_metrics"


def broker_transport_options(settings: Settings) -> dict[str, object]:
    """Redis transport options: how soon a lost batch comes back, and how soon a dead link
    (a Redis restart, or a NAT/firewall silently dropping the connection) is noticed."""
    return {
        # Redis re-delivers an unacked message after this; it exceeds the longest batch
        # (hard time limit plus retry back-off), so a live batch is never run twice at once.
        "visibility_timeout": settings.visibility_timeout,
        # kombu sweeps for messages past their visibility timeout every interval x throttle
        # seconds (100 s by default); every 10 s brings a lost batch back promptly.
        "unacked_restore_interval": 10,
        "unacked_restore_throttle": 1,
        # Without a socket timeout a command on a black-holed connection (an ack, a
        # publish) waits forever; with it, it fails and kombu reconnects.
        "socket_timeout": settings.redis_socket_timeout,
        "socket_connect_timeout": min(10.0, settings.redis_socket_timeout),
        "socket_keepalive": True,
        # kombu drops a BRPOP connection whose reply is overdue by more than this (plus
        # the 1 s BRPOP timeout) and pings idle pooled connections before using them.
        "health_check_interval": settings.redis_health_check_interval,
        # A pooled connection that went dead while idle fails its health-check PING after
        # socket_timeout; retry the command once on a fresh connection instead of failing
        # it. Without this, kombu loses a message it had just popped (its unacked record
        # is never written) and an ack that fails leaves the worker believing a batch is
        # still in flight, so it stops consuming. Commands retried this way are idempotent
        # (acks, unacked records) or harmless twice (a publish: tag_batch is idempotent).
        "retry_on_timeout": True,
    }


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
        broker_transport_options=broker_transport_options(settings),
        # Every batch is cut off below the visibility timeout (Settings checks it), so a
        # hung batch cannot outlive its message: the soft limit interrupts it and the task
        # re-queues it as a delivery that died; the hard limit kills the process.
        task_time_limit=settings.hard_time_limit,
        task_soft_time_limit=settings.soft_time_limit,
        # A batch cut off by the hard limit is handed straight back (not acked): the ledger
        # counts it as a delivery that died, and after a few it is split. Acking it would
        # leave its items pending until a sweep.
        task_acks_on_timeout=False,
        worker_cancel_long_running_tasks_on_connection_loss=True,
        task_default_queue=settings.queue,
        worker_hijack_root_logger=True,
        worker_redirect_stdouts=False,
        # Task events (sent by the publisher; received, started, succeeded, retried, failed
        # by the workers), so Flower and `celery events` show the workers and their batches.
        # A fanout publish per change, which Redis drops when nothing listens.
        worker_send_task_events=True,
        task_send_sent_event=True,
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
    tasks.register(app)
    return app


# --- worker metrics (tagger.metrics) ----------------------------------------------------
# Celery's signals are process-wide: each handler acts only for a worker of a tagger app.
@worker_init.connect
def _prepare_metrics(sender: Any, **_: object) -> None:
    # In the main process, before the pool forks: its children inherit the directory.
    if hasattr(sender.app, "tagger_settings"):
        metrics.prepare_directory()


@worker_ready.connect
def _serve_metrics(sender: Any, **_: object) -> None:
    # Not at worker_init: by now the pool's children are forked without the listening
    # socket. Every pool runs this in the main process (prefork, threads, solo).
    settings = getattr(sender.app, "tagger_settings", None)
    if settings is not None:
        metrics.serve(settings.metrics_port)


@worker_shutdown.connect
def _stop_metrics(**_: object) -> None:
    metrics.stop()


@inspect_command(name=TAGGER_METRICS)
def _tagger_metrics(state: Any, **_: object) -> dict[str, Any]:
    """This worker's batch metrics, merged over its processes, and its pool."""
    from celery.worker import state as worker_state

    stats = state.consumer.controller.stats()
    pool = stats.get("pool") or {}
    return {
        **metrics.summary(),
        "pid": stats.get("pid"),
        "uptime_seconds": stats.get("uptime"),
        # "celery.concurrency.prefork:TaskPool" -> "prefork"
        "pool": str(pool.get("implementation", "")).split(":")[0].rsplit(".", 1)[-1],
        "concurrency": pool.get("max-concurrency"),
        "active_batches": len(worker_state.active_requests),
    }


@dataclass(frozen=True)
class QueueDepth:
    queue: str
    waiting: int
    #: delivered to a worker and not acked yet, on every queue of the broker's Redis db
    unacked: int | None


def queue_depth(app: Celery, *, queue: str) -> QueueDepth:
    """Messages waiting in ``queue`` (its priority lists included), and those unacked."""
    from kombu.exceptions import ChannelError

    with app.connection_for_read() as conn:
        channel = conn.default_channel
        try:
            waiting = channel.queue_declare(queue=queue, passive=True).message_count
        except ChannelError:
            waiting = 0  # Redis keeps no empty list: no queue is an empty queue
        key = getattr(channel, "unacked_key", None)  # kombu's Redis transport
        unacked = channel.client.hlen(key) if key else None
    return QueueDepth(queue, waiting, unacked)


def worker_metrics(app: Celery, *, timeout: float) -> dict[str, dict[str, Any]]:
    """{worker name: its TAGGER_METRICS reply} from every worker answering in ``timeout``
    seconds, on any host; a worker without the command replies {"error": ...}."""
    replies = app.control.broadcast(TAGGER_METRICS, reply=True, timeout=timeout)
    return {name: reply for answer in replies or [] for name, reply in answer.items()}
