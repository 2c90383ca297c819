"""The messages on the broker: task names and publishing ``tag_batch`` batches.

Shared by the Celery app, the tasks and the use cases that queue work (`tagger import`,
`retag`, `jobs resume`, the sweep), so that none of them imports another to reach a name.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from tagger.exceptions import TaggerError

if TYPE_CHECKING:
    from celery import Celery

    from tagger.progress import OnProgress

TAG_BATCH = "tagger.tag_batch"
SWEEP = "tagger.sweep"
# Messages per Redis round trip when streaming a job's batches (publish_stream).
FLUSH_EVERY = 256
# Celery's own limit on a message's argsrepr header (what Flower and the logs show).
ARGSREPR_MAX = 1024

log = logging.getLogger(__name__)


class PublishError(TaggerError):
    """The broker failed part-way. The job and its items are committed and still pending in
    the job's ledger, so nothing is lost: `tagger jobs resume JOB` queues them again."""

    def __init__(self, *, job_id: int, sent: int, batches: int, items: int, cause: BaseException):
        self.job_id = job_id
        self.sent = sent
        self.batches = batches
        self.items = items
        # `tagger retag` would not do: the items are pending in a live job, so a sweep leaves
        # them alone until the job counts as stalled (hours later).
        partly = f" ({sent} of {batches} batches were queued)" if sent else ""
        self.next_step = (
            f"job {job_id} is saved with {items} item{'s' if items != 1 else ''} pending{partly}; "
            f"run `tagger jobs resume {job_id}` once Redis is back"
        )
        super().__init__(
            f"job {job_id}: queued {sent} of {batches} batches, then the broker failed "
            f"({type(cause).__name__}: {cause}); {self.next_step}"
        )


def publish_batches(
    app: Celery,
    *,
    queue: str,
    job_id: int,
    batches: Sequence[Sequence[str]],
    on_sent: OnProgress | None = None,
) -> int:
    """Send one ``tag_batch`` message per batch; returns how many were sent.

    ``on_sent`` hears ("queueing job N", sent, len(batches)) before the first message and
    after each one. Any broker failure becomes a PublishError that says how far it got.
    """
    description = f"queueing job {job_id}"
    sent = 0
    if on_sent is not None:
        on_sent(description, sent, len(batches))
    try:
        # One producer (one connection) for the whole job rather than one per message.
        with app.producer_or_acquire() as producer:
            for batch in batches:
                app.send_task(TAG_BATCH, args=[job_id, list(batch)], queue=queue, producer=producer)
                sent += 1
                if on_sent is not None:
                    on_sent(description, sent, len(batches))
    except Exception as exc:
        raise PublishError(
            job_id=job_id,
            sent=sent,
            batches=len(batches),
            items=sum(len(b) for b in batches),
            cause=exc,
        ) from exc
    log.info("job %s: queued %d batches on %r", job_id, sent, queue)
    return sent


def publish_stream(
    app: Celery,
    *,
    queue: str,
    job_id: int,
    batches: Iterable[Sequence[str]],
    batch_count: int,
    item_count: int,
    on_sent: OnProgress | None = None,
) -> int:
    """Send one ``tag_batch`` message per batch as ``batches`` yields them, FLUSH_EVERY
    messages per Redis round trip; returns how many were sent.

    ``send_task`` costs about 1-2 ms of Python per message here (a Redis client per
    publish, saferepr of 64 ids, the task-sent event), which made publishing a
    million-item import (15,600 batches) take 30 s. Each message is still built by
    Celery (``app.amqp.create_task_message``: the same headers, properties and body a
    worker gets from ``send_task``) and put on the queue by kombu's Redis channel; only
    the LPUSHes go out pipelined (kombu's publish batch), and no task-sent event is sent
    for them (Flower sees each batch from the worker's task-received on).

    ``on_sent`` hears ("queueing job N", sent, batch_count) before the first message and
    after each round trip. A broker failure becomes a PublishError counting only the
    messages whose round trip succeeded. A broker other than Redis gets send_task.
    """
    description = f"queueing job {job_id}"
    sent = 0
    if on_sent is not None:
        on_sent(description, sent, batch_count)
    try:
        # A connection of its own: kombu pipelines publishes only on a connection that does
        # not retry a timed-out command (a replayed pipeline could queue a batch twice; a
        # failed one is a PublishError, and `tagger jobs resume` re-sends what is pending).
        with app.connection_for_write(transport_options={"retry_on_timeout": False}) as conn:
            policy = app.conf.task_publish_retry_policy or {}
            conn.ensure_connection(
                max_retries=policy.get("max_retries", 3),
                interval_start=policy.get("interval_start", 0),
                interval_step=policy.get("interval_step", 0.2),
                interval_max=policy.get("interval_max", 0.2),
            )
            channel = conn.default_channel
            if not getattr(channel, "supports_batch_publish", False):
                return _send_each(app, queue, job_id, batches, batch_count, on_sent)
            pipeline = channel.create_publish_batch(max_size=2 * FLUSH_EVERY)
            try:
                waiting = 0
                for batch in batches:
                    pipeline.publish(
                        _task_message(app, channel, job_id, batch), exchange="", routing_key=queue
                    )
                    waiting += 1
                    if waiting == FLUSH_EVERY:
                        pipeline.flush()
                        sent, waiting = sent + waiting, 0
                        if on_sent is not None:
                            on_sent(description, sent, batch_count)
                pipeline.flush()
                sent += waiting
            finally:
                pipeline.close()
    except PublishError:
        raise
    except Exception as exc:
        raise PublishError(
            job_id=job_id, sent=sent, batches=batch_count, items=item_count, cause=exc
        ) from exc
    if on_sent is not None:
        on_sent(description, sent, batch_count)
    log.info("job %s: queued %d batches on %r", job_id, sent, queue)
    return sent


def _task_message(app: Celery, channel: Any, job_id: int, batch: Sequence[str]) -> dict:
    """The message ``send_task(TAG_BATCH, args=[job_id, batch])`` would put on the queue,
    ready for the channel: Celery's task protocol 2, JSON, persistent, priority 0."""
    from kombu.serialization import dumps
    from kombu.utils.uuid import uuid

    args = [job_id, list(batch)]
    argsrepr = repr(args)  # repr of strings is C-fast; Celery's saferepr is not
    if len(argsrepr) > ARGSREPR_MAX:
        argsrepr = argsrepr[: ARGSREPR_MAX - 4] + "...]"
    headers, properties, body, _ = app.amqp.create_task_message(
        uuid(),
        TAG_BATCH,
        args,
        {},
        reply_to=app.thread_oid,
        argsrepr=argsrepr,
        kwargsrepr="{}",
        ignore_result=None,
        create_sent_event=False,
    )
    content_type, content_encoding, data = dumps(body, serializer="json")
    return channel.prepare_message(
        data, 0, content_type, content_encoding, headers, {**properties, "delivery_mode": 2}
    )


def _send_each(
    app: Celery,
    queue: str,
    job_id: int,
    batches: Iterable[Sequence[str]],
    batch_count: int,
    on_sent: OnProgress | None,
) -> int:
    description, sent = f"queueing job {job_id}", 0
    with app.producer_or_acquire() as producer:
        for batch in batches:
            app.send_task(TAG_BATCH, args=[job_id, list(batch)], queue=queue, producer=producer)
            sent += 1
            if on_sent is not None:
                on_sent(description, sent, batch_count)
    return sent
