"""Publishing and re-publishing batches: PublishError and `jobs resume`, against the real
Postgres and Redis (the Celery queue is a Redis list)."""

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
    resumed = resume_job(app, settings, session_factory, job_id=job_id)
    assert (resumed.status, resumed.items, resumed.batches) == ("running", 4, 2)
    batches = queue()
    assert {j for j, _ in batches} == {job_id}
    assert sorted(len(b) for _, b in batches) == [1, 3]  # kombu LPUSHes: newest first
    assert Counter(i for _, b in batches for i in b) == Counter(["i1", "i2", "i3", "i5"])


def test_resume_of_a_finished_job_queues_nothing(app, settings, session_factory, queue):
    """A finished job is reported as such and nothing is published."""
    from tagger.enqueue import resume_job

    with session_factory.begin() as session:
        job_id = create_job(
            session=session, kind="import", source="t", item_ids=[], batch_size=4
        ).id
    resumed = resume_job(app, settings, session_factory, job_id=job_id)
    assert (resumed.status, resumed.batches) == ("finished", 0)
    assert queue() == []


def test_resume_of_an_unknown_job_is_refused(app, settings, session_factory, queue):
    """An id that names no job raises UnknownJob and publishes nothing."""
    from tagger.enqueue import resume_job

    with pytest.raises(UnknownJob, match="no job with id 404"):
        resume_job(app, settings, session_factory, job_id=404)
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
    resume_job(app, settings, session_factory, job_id=job_id)
    with session_factory() as session:
        job = session.get(Job, job_id)
        assert job_stats(job, now=utcnow(), stall_after=stall).state == "queued"
    assert len(queue()) == 1


def test_failed_publish_names_redis_and_the_resume_command():
    """A real refused publish raises PublishError; its one line adds the resume instruction."""
    from tagger.celery_app import create_app
    from tagger.enqueue import PublishError, publish_batches
    from tagger.service_errors import user_error
    from tagger.settings import Settings

    url = f"redis://:pw-xyz-123@127.0.0.1:{services.free_port()}/0"
    s = Settings(broker_url=url, database_url="sqlite:///unused.db")
    with pytest.raises(PublishError) as info:
        publish_batches(create_app(s), s, 12, [["a", "b"], ["c"]], progress=False)
    exc = info.value
    assert (exc.job_id, exc.sent, exc.batches, exc.items) == (12, 0, 2, 3)
    assert "run `tagger jobs resume 12` once Redis is back" in str(exc)
    assert user_error(exc, s).message == (
        f"cannot reach Redis at {url.replace('pw-xyz-123', '***')}: connection refused; "
        "job 12 is saved with 3 items pending; run `tagger jobs resume 12` once Redis is back"
    )
