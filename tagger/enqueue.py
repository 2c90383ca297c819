"""Queueing work: `tagger import` and `tagger retag` write the items and the job to
Postgres, commit, then publish the batches to Redis; `tagger jobs resume` publishes a
saved job's pending items again (after Redis was down, or when a job stalled).

Each function takes the Celery app and the session factory it works with and returns what
it did; printing it is the CLI's business."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from tagger.db import Job, utcnow
from tagger.importer import import_catalogue
from tagger.jobs import get_job
from tagger.ledger import batch_count as ledger_batch_count
from tagger.messages import publish_stream
from tagger.pending import count_pending, stream_batches
from tagger.settings import Settings
from tagger.shadow import ShadowPlan, plan_shadow_job
from tagger.sources import open_source
from tagger.states import ACTIVE_STATUSES
from tagger.sweep import plan_sweep

if TYPE_CHECKING:
    from celery import Celery

    from tagger.progress import OnProgress

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ImportOutcome:
    job_id: int
    items: int  # catalogue rows read
    new: int
    changed: int
    unchanged: int
    to_tag: int  # the job's total: items that need a tag from the active model
    batches: int  # batches queued


@dataclass(frozen=True)
class Resumed:
    job_id: int
    status: str  # the job's status; nothing is queued unless it is queued/running
    items: int  # pending items queued again
    batches: int


def resume_job(
    *,
    app: Celery,
    settings: Settings,
    sessions: sessionmaker[Session],
    job_id: int,
    on_sent: OnProgress | None = None,
) -> Resumed:
    """Publish the job's still-pending items again now, in batches of the job's batch size.

    Items whose first message is still queued (or running) are sent twice; that is
    harmless: ``tag_batch`` is idempotent (tags are upserted) and the ledger counts each
    item once. A finished job queues nothing. UnknownJob for an unknown id.
    """
    with sessions() as session:
        job = get_job(session=session, job_id=job_id)
        if job.status not in ACTIVE_STATUSES:
            return Resumed(job_id=job_id, status=job.status, items=0, batches=0)
        pending = count_pending(session=session, job_id=job_id)
        batch_size, status = job.batch_size, job.status
    # Streamed from the ledger page by page, as an import publishes: a job of millions of
    # pending items is never held in memory whole.
    batches = publish_pending(
        app=app,
        settings=settings,
        sessions=sessions,
        job_id=job_id,
        batch_size=batch_size,
        items=pending,
        on_sent=on_sent,
    )
    if batches:
        # Counts as a sign of life only once the batches are out: a stalled job now reads
        # as queued/running again (so `jobs watch` does not stop at once, and a sweep leaves
        # these items to it) until stall_after passes without progress.
        with sessions.begin() as session:
            session.execute(
                sa.update(Job)
                .where(Job.id == job_id, Job.status.in_(ACTIVE_STATUSES))
                .values(updated_at=utcnow())
            )
    return Resumed(job_id=job_id, status=status, items=pending, batches=batches)


def import_and_queue(
    *,
    app: Celery,
    settings: Settings,
    sessions: sessionmaker[Session],
    file: Path | None,
    s3_prefix: str | None,
    batch_size: int,
    on_sent: OnProgress | None = None,
    on_read: OnProgress | None = None,
) -> ImportOutcome:
    """Import a catalogue (a file, a folder or an S3 prefix) and queue its batches.

    The catalogue is streamed into a staging table and checked whole before anything is
    written (tagger.importer), in one transaction that commits the items, the job and its
    ledger; only then are the batches published, read back from the ledger page by page.
    ``on_read`` hears the reading (default: ``on_sent``, so one bar shows both steps).
    """
    source = open_source(settings, file=file, s3_prefix=s3_prefix)
    # Commit before publishing: a worker may pick a batch up at once and must find the job.
    with sessions.begin() as session:
        done = import_catalogue(
            session=session,
            source=source,
            batch_size=batch_size,
            on_read=on_read if on_read is not None else on_sent,
        )
        job_id, to_tag = done.job.id, done.job.total
    started = time.perf_counter()
    batches = publish_pending(
        app=app,
        settings=settings,
        sessions=sessions,
        job_id=job_id,
        batch_size=batch_size,
        items=to_tag,
        pending_only=False,
        on_sent=on_sent,
    )
    log.info("job %s: publish %.2f s", job_id, time.perf_counter() - started)
    return ImportOutcome(
        job_id=job_id,
        items=done.items,
        new=done.new,
        changed=done.changed,
        unchanged=done.unchanged,
        to_tag=to_tag,
        batches=batches,
    )


def publish_pending(
    *,
    app: Celery,
    settings: Settings,
    sessions: sessionmaker[Session],
    job_id: int,
    batch_size: int,
    items: int | None = None,
    pending_only: bool = True,
    on_sent: OnProgress | None = None,
) -> int:
    """Publish the job's batches, reading them from the ledger a page of batch rows at a
    time (one short session per page, no transaction held open while Redis is spoken
    to); returns the batches sent. ``pending_only`` (a resume): only the items still
    pending, in batches of ``batch_size``; without it (the first publish of a job just
    planned) the batches as the planner wrote them.

    ``items``: how many are pending, when the caller knows (counted otherwise). Memory
    holds one page, whatever the job's size. PublishError when the broker fails.
    """
    if items is None:
        with sessions() as session:
            items = count_pending(session=session, job_id=job_id)
    if not items:
        return 0
    if pending_only:
        batch_count = -(-items // batch_size)
    else:
        with sessions() as session:
            batch_count = ledger_batch_count(session=session, job_id=job_id)
    return publish_stream(
        app,
        queue=settings.queue,
        job_id=job_id,
        batches=stream_batches(
            sessions, job_id=job_id, batch_size=batch_size, pending_only=pending_only
        ),
        batch_count=batch_count,
        item_count=items,
        on_sent=on_sent,
    )


def sweep_and_queue(
    *,
    app: Celery,
    settings: Settings,
    sessions: sessionmaker[Session],
    stale: bool = True,
    failed: bool = True,
    all_: bool = False,
    limit: int | None = None,
    source: str = "sweep",
    on_sent: OnProgress | None = None,
) -> int | None:
    """Run a re-tag sweep and queue its job; returns the job id, or None if nothing to do."""
    with sessions.begin() as session:
        plan = plan_sweep(
            session=session,
            settings=settings,
            stale=stale,
            failed=failed,
            all_=all_,
            limit=limit,
            source=source,
            with_batches=False,
        )
        job_id = plan.job.id if plan.job else None
        batch_size = plan.job.batch_size if plan.job else settings.batch_size
    if job_id is None:
        log.info("sweep (%s): nothing to re-tag", source)
        return None
    log.info(
        "sweep (%s): job %s with %d stale and %d failed items",
        source,
        job_id,
        plan.stale,
        plan.failed,
    )
    # Streamed from the ledger: a sweep of millions of items never holds its ids in memory.
    publish_pending(
        app=app,
        settings=settings,
        sessions=sessions,
        job_id=job_id,
        batch_size=batch_size,
        items=plan.total,
        pending_only=False,
        on_sent=on_sent,
    )
    return job_id


def compare_and_queue(
    *,
    app: Celery,
    settings: Settings,
    sessions: sessionmaker[Session],
    candidate: str,
    batch_size: int,
    sample: int | None = None,
    from_job: int | None = None,
    labelled: int | None = None,
    on_sent: OnProgress | None = None,
) -> ShadowPlan:
    """Plan a shadow job of ``candidate`` (tagger.shadow.plan_shadow_job), commit it, then
    publish its batches for the workers, as an import does. A shadow job of the candidate
    named by ``from_job`` is the comparison's already: nothing is queued again (`tagger
    jobs resume` re-publishes its pending items if Redis lost them)."""
    with sessions.begin() as session:
        plan = plan_shadow_job(
            session=session,
            candidate=candidate,
            batch_size=batch_size,
            sample=sample,
            from_job=from_job,
            labelled=labelled,
        )
    if not plan.reused:
        publish_pending(
            app=app,
            settings=settings,
            sessions=sessions,
            job_id=plan.job_id,
            batch_size=plan.batch_size,
            items=plan.items,
            pending_only=False,
            on_sent=on_sent,
        )
    return plan
