"""Celery tasks. ``tag_batch`` is the one place with a broad ``except``: it records what
failed and decides whether to retry. The contract they keep (idempotent, late acks, time
limits below the visibility timeout) is in docs/architecture.md, "The task contract"."""

from __future__ import annotations

import logging
import os
import random
import threading

import botocore.exceptions
import sqlalchemy.exc
from celery import Celery, Task
from celery.exceptions import Reject, SoftTimeLimitExceeded
from celery.signals import worker_init, worker_process_init, worker_process_shutdown

from tagger import metrics
from tagger.db import make_engine, make_session_factory
from tagger.enqueue import sweep_and_queue
from tagger.exceptions import ArtifactError, BatchError, NoActiveModel
from tagger.messages import SWEEP, TAG_BATCH
from tagger.pipeline import BatchOutcome, BatchTagger
from tagger.settings import Settings

log = logging.getLogger(__name__)

# Errors that are not the items' fault: retry the batch after a back-off. If they outlast
# the retries the items stay pending in the job's ledger (the job shows as stalled) and
# the next sweep queues them again, rather than being marked failed by the thousand.
TRANSIENT = (
    ArtifactError,
    sqlalchemy.exc.OperationalError,
    sqlalchemy.exc.InterfaceError,
    botocore.exceptions.BotoCoreError,
    botocore.exceptions.ClientError,
    NoActiveModel,
    ConnectionError,
    TimeoutError,
)

# The ledger prune the nightly sweep queues after itself (tagger.retention).
PRUNE_LEDGER = "tagger.prune_ledger"
# It deletes in short transactions, so it may run long: an hour before the soft limit
# stops it between chunks (what it deleted stays; the next night carries on).
PRUNE_SOFT_TIME_LIMIT = 3600

# Per process, created lazily on the first batch, i.e. after the prefork pool forked.
_tagger: BatchTagger | None = None


_tagger_lock = threading.Lock()  # `--pool threads`: several tasks may start at once


# Pool processes sharing this host's cores (set when the worker starts, inherited by the
# fork): a model's threads are split between them (tagger.runtime.ModelLoader).
_pool_processes = 1


def batch_tagger(settings: Settings) -> BatchTagger:
    global _tagger
    with _tagger_lock:
        if _tagger is None:
            engine = make_engine(settings.database_url)
            _tagger = BatchTagger(
                settings, make_session_factory(engine), pool_processes=_pool_processes
            )
            log.info("worker process %d ready", os.getpid())
        return _tagger


@worker_init.connect
def _note_pool(sender: object = None, **_: object) -> None:
    # Only the prefork pool runs tasks in several processes; the threads and solo pools
    # run every task in this one, whatever --concurrency says.
    global _pool_processes
    prefork = "prefork" in str(getattr(sender, "pool_cls", ""))
    _pool_processes = int(getattr(sender, "concurrency", 1) or 1) if prefork else 1


@worker_process_init.connect
def _forget_parent_state(**_: object) -> None:
    # Anything inherited from the parent (engine pool, boto3 client, TF) is unusable here.
    global _tagger
    _tagger = None


@worker_process_shutdown.connect
def _dispose(**_: object) -> None:
    if _tagger is not None:
        _tagger.session_factory.kw["bind"].dispose()


@worker_process_shutdown.connect
def _leave_metrics(**_: object) -> None:
    try:
        metrics.mark_dead(os.getpid())  # this process's live gauges go with it
    except Exception as exc:
        log.warning("metrics: could not mark process %d dead: %r", os.getpid(), exc)


def _observe(outcome: BatchOutcome | None = None, *, failed: dict[str, int] | None = None) -> None:
    # Metrics are for watching the work, never a reason for a batch to fail.
    try:
        if outcome is not None:
            metrics.observe_batch(outcome)
        for reason, n in (failed or {}).items():
            metrics.observe_failures([reason] * n)
    except Exception as exc:
        log.warning("metrics: could not record a batch: %r", exc)


def backoff(retries: int, cap: int) -> float:
    """Exponential back-off with full jitter, so retrying workers don't stampede."""
    return random.uniform(0, min(cap, 5 * 2**retries))


def tag_batch(self: Task, job_id: int | None, item_ids: list[str], deaths_before: int = 0) -> dict:
    """Tag one batch; safe to run twice (at-least-once delivery)."""
    settings: Settings = self.app.tagger_settings
    retries = self.request.retries
    final = retries >= self.max_retries
    tagger = batch_tagger(settings)
    try:
        outcome = tagger.run(job_id, item_ids, final=final, deaths_before=deaths_before)
    except SoftTimeLimitExceeded:
        # Hung (a stalled decoder, a stuck connection): leave the in-flight mark set so the
        # ledger counts this delivery as one that died, and hand the message straight back.
        # After max_batch_deaths such deliveries the batch is split to isolate the cause.
        log.error(
            "job %s: batch of %d over the %d s soft time limit; re-queued as a delivery that died",
            job_id,
            len(item_ids),
            settings.soft_time_limit,
        )
        raise Reject("soft time limit", requeue=True) from None
    except TRANSIENT as exc:
        tagger.release(job_id, item_ids)
        if final:
            # The items stay pending in the job's ledger (the job shows as stalled) and the
            # next sweep queues them again: not failed by the thousand for an outage.
            log.error(
                "job %s: batch of %d gave up after %d retries: %r",
                job_id,
                len(item_ids),
                retries,
                exc,
            )
            return {"job_id": job_id, "tagged": 0, "failed": 0, "gave_up": len(item_ids)}
        log.warning("job %s: transient error, retry %d: %r", job_id, retries + 1, exc)
        raise self.retry(exc=exc, countdown=backoff(retries, settings.retry_backoff_max)) from exc
    except Exception as exc:
        log.exception("job %s: batch of %d failed", job_id, len(item_ids))
        message = f"{type(exc).__name__}: {exc}"[:500]
        tagger.record_failed_batch(job_id, item_ids, BatchError(message))
        _observe(failed={BatchError.reason: len(item_ids)})
        return {"job_id": job_id, "tagged": 0, "failed": len(item_ids)}
    _observe(outcome)
    if outcome.split:
        # Queued before this message is acked: a death in between only repeats the split.
        for half in outcome.split:
            self.app.send_task(
                TAG_BATCH,
                args=[job_id, half],
                kwargs={"deaths_before": outcome.deaths_before},
                queue=settings.queue,
            )
        return {"job_id": job_id, "tagged": 0, "failed": 0, "split": len(outcome.split)}
    if outcome.deferred:
        # Tag what we could; only the items with transient storage errors go round again.
        raise self.retry(
            args=[job_id, sorted(outcome.deferred)],
            kwargs={"deaths_before": deaths_before},
            countdown=backoff(retries, settings.retry_backoff_max),
        )
    return {"job_id": job_id, "tagged": len(outcome.tagged), "failed": len(outcome.failed)}


def sweep(
    self: Task,
    stale: bool = True,
    failed: bool = True,
    all_: bool = False,
    limit: int | None = None,
    source: str = "beat",
    prune: bool = True,
) -> int | None:
    """The scheduled re-tag sweep: plan a job in Postgres and queue its batches, then
    queue the ledger prune (unless TAGGER_LEDGER_RETENTION_DAYS is 0)."""
    settings: Settings = self.app.tagger_settings
    tagger = batch_tagger(settings)
    try:
        job_id = sweep_and_queue(
            app=self.app,
            settings=settings,
            sessions=tagger.session_factory,
            stale=stale,
            failed=failed,
            all_=all_,
            limit=limit,
            source=source,
        )
    except NoActiveModel:
        log.warning("sweep skipped: no active model version")
        job_id = None
    if prune and settings.ledger_retention_days:
        # Its own task: it may outlast this task's time limit (a batch's), and a worker
        # that takes it up acks it at once, so Redis never hands it to a second worker.
        self.app.send_task(PRUNE_LEDGER, queue=settings.queue)
    return job_id


def prune_ledger(self: Task, older_than_days: int | None = None) -> dict:
    """Delete the ledger rows of finished jobs older than the retention, in chunks."""
    from tagger.retention import prune_ledgers

    settings: Settings = self.app.tagger_settings
    days = older_than_days or settings.ledger_retention_days
    if not days:
        return {"jobs": 0, "rows": 0}
    try:
        done = prune_ledgers(sessions=batch_tagger(settings).session_factory, older_than_days=days)
    except SoftTimeLimitExceeded:
        log.warning("ledger prune stopped by its time limit; the next one carries on")
        return {"stopped": True}
    log.info("pruned the ledger of %d jobs older than %d days: %d rows", done.jobs, days, done.rows)
    return {"jobs": done.jobs, "rows": done.rows}


def register(app: Celery) -> None:
    settings: Settings = app.tagger_settings
    # shared=False: Celery otherwise adds every task to every app made in the process, so
    # a second app (tests, embedded use) would silently get the first app's retry limits.
    app.task(
        bind=True,
        shared=False,
        name=TAG_BATCH,
        max_retries=settings.task_max_retries,
        acks_late=True,
        reject_on_worker_lost=True,
    )(tag_batch)
    app.task(bind=True, shared=False, name=SWEEP, acks_late=True)(sweep)
    app.task(
        bind=True,
        shared=False,
        name=PRUNE_LEDGER,
        acks_late=False,
        soft_time_limit=PRUNE_SOFT_TIME_LIMIT,
        time_limit=PRUNE_SOFT_TIME_LIMIT + 60,
    )(prune_ledger)
