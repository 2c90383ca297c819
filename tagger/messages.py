"""The messages on the broker: task names and publishing ``tag_batch`` batches.

Shared by the Celery app, the tasks and the use cases that queue work (`tagger import`,
`retag`, `jobs resume`, the sweep), so that none of them imports another to reach a name.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

from tagger.exceptions import TaggerError

if TYPE_CHECKING:
    from celery import Celery

    from tagger.progress import OnProgress

TAG_BATCH = "tagger.tag_batch"
SWEEP = "tagger.sweep"

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
