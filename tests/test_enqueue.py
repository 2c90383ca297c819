"""Queueing work: `import`, `jobs resume` and what they return and report, against the
real Postgres and Redis (the Celery queue is a Redis list)."""

from __future__ import annotations

import base64
import json
from collections import Counter
from datetime import timedelta

import pytest
import sqlalchemy as sa

from tagger.catalogue import CatalogueItem
from tagger.db import Job, utcnow
from tagger.exceptions import UnknownJob
from tagger.importer import import_items
from tagger.jobs import create_job, record_outcomes
from tagger.progress import job_stats
from tagger.states import JobKind
from tests import services
from tests.factories import add_model_version


@pytest.fixture
def settings(pg_url, redis_url, db):
    from tagger.settings import Settings

    return Settings(database_url=pg_url, broker_url=redis_url)


@pytest.fixture
def app(settings):
    from tagger.celery_app import create_app

    return create_app(settings)


@pytest.fixture
def queue(redis_db, settings):
    client = services.redis_client(redis_db)
    yield lambda: [_decode(raw) for raw in client.lrange(settings.queue, 0, -1)]
    client.close()


def _decode(raw: bytes) -> tuple[int, list[str]]:
    body = json.loads(base64.b64decode(json.loads(raw)["body"]))
    job_id, item_ids = body[0][:2]
    return job_id, item_ids


def _job(session_factory, n: int, batch_size: int) -> int:
    with session_factory.begin() as session:
        add_model_version(session, "v1", activate=True)
        items = [CatalogueItem(item_id=f"i{k}", image_uri=f"s3://b/{k}.jpg") for k in range(n)]
        return import_items(session=session, items=items, source="t", batch_size=batch_size).job.id


def test_resume_queues_each_pending_item_once_in_the_jobs_batch_size(
    app, settings, session_factory, queue
):
    """Tagged and failed items stay out; pending ones go out once, job.batch_size at a time."""
    from tagger.enqueue import resume_job

    job_id = _job(session_factory, 7, batch_size=3)
    with session_factory.begin() as session:
        record_outcomes(session=session, job_id=job_id, tagged=["i0", "i4"], failed=["i6"])
    reports = []
    resumed = resume_job(
        app=app,
        settings=settings,
        sessions=session_factory,
        job_id=job_id,
        on_sent=lambda *report: reports.append(report),
    )
    assert (resumed.status, resumed.items, resumed.batches) == ("running", 4, 2)
    assert [done for _, done, _ in reports] == [0, 1, 2]  # once before, then per batch
    assert {(what, total) for what, _, total in reports} == {(f"queueing job {job_id}", 2)}
    batches = queue()
    assert {j for j, _ in batches} == {job_id}
    assert sorted(len(b) for _, b in batches) == [1, 3]  # kombu LPUSHes: newest first
    assert Counter(i for _, b in batches for i in b) == Counter(["i1", "i2", "i3", "i5"])


def test_resume_of_a_finished_job_queues_nothing(app, settings, session_factory, queue):
    """A finished job is reported as such and nothing is published."""
    from tagger.enqueue import resume_job

    with session_factory.begin() as session:
        job_id = create_job(
            session=session, kind=JobKind.IMPORT, source="t", item_ids=[], batch_size=4
        ).id
    resumed = resume_job(app=app, settings=settings, sessions=session_factory, job_id=job_id)
    assert (resumed.status, resumed.batches) == ("finished", 0)
    assert queue() == []


def test_resume_of_an_unknown_job_is_refused(app, settings, session_factory, queue):
    """An id that names no job raises UnknownJob and publishes nothing."""
    from tagger.enqueue import resume_job

    with pytest.raises(UnknownJob, match="no job with id 404"):
        resume_job(app=app, settings=settings, sessions=session_factory, job_id=404)
    assert queue() == []


def test_resume_brings_a_stalled_job_back(app, settings, session_factory, queue):
    """Once its batches are out again, a stalled job no longer reads as stalled."""
    from tagger.enqueue import resume_job

    job_id = _job(session_factory, 2, batch_size=8)
    with session_factory.begin() as session:
        session.execute(
            sa.update(Job).where(Job.id == job_id).values(updated_at=utcnow() - timedelta(hours=3))
        )
    stall = settings.stall_after
    with session_factory() as session:
        job = session.get(Job, job_id)
        assert job_stats(job, now=utcnow(), stall_after=stall).state == "stalled"
    resume_job(app=app, settings=settings, sessions=session_factory, job_id=job_id)
    with session_factory() as session:
        job = session.get(Job, job_id)
        assert job_stats(job, now=utcnow(), stall_after=stall).state == "queued"
    assert len(queue()) == 1


def test_import_returns_its_counts_and_queues_its_batches(
    app, settings, session_factory, queue, tmp_path
):
    """`import_and_queue` commits the job, queues its batches and returns what it did."""
    from tagger.enqueue import ImportOutcome, import_and_queue
    from tests.factories import write_csv

    with session_factory.begin() as session:
        add_model_version(session, "v1", activate=True)
    rows = [{"item_id": f"i{k}", "image_uri": f"s3://b/{k}.jpg"} for k in range(5)]
    catalogue = write_csv(tmp_path / "c.csv", rows)
    reports = []
    done = import_and_queue(
        app=app,
        settings=settings,
        sessions=session_factory,
        file=catalogue,
        s3_prefix=None,
        batch_size=2,
        on_sent=lambda *report: reports.append(report),
    )
    assert done == ImportOutcome(
        job_id=done.job_id, items=5, new=5, changed=0, unchanged=0, to_tag=5, batches=3
    )
    assert reports[-1] == (f"queueing job {done.job_id}", 3, 3)
    batches = queue()
    assert {j for j, _ in batches} == {done.job_id}
    assert sorted(len(b) for _, b in batches) == [1, 2, 2]
