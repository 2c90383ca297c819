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
        record_outcomes(
            session=session, job_id=job_id, tagged=["i0", "i4"], failed={"i6": "corrupt_image"}
        )
    reports = []
    resumed = resume_job(
        app=app,
        settings=settings,
        sessions=session_factory,
        job_id=job_id,
        on_sent=lambda *report: reports.append(report),
    )
    assert (resumed.status, resumed.items, resumed.batches) == ("running", 4, 2)
    assert [done for _, done, _ in reports] == [0, 2]  # once before, then per round trip
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


def test_streamed_import_publishes_every_item_to_tag_exactly_once(
    app, settings, session_factory, queue, tmp_path, monkeypatch
):
    """1,000 items read back in pages of 3 batch rows and flushed 3 messages a round trip: every
    item in exactly one batch of at most 64, each a tag_batch message for the job."""
    from tagger.enqueue import import_and_queue
    from tagger.messages import TAG_BATCH
    from tests.factories import write_csv

    monkeypatch.setattr("tagger.ledger.PAGE_BATCHES", 3)
    monkeypatch.setattr("tagger.messages.FLUSH_EVERY", 3)
    with session_factory.begin() as session:
        add_model_version(session, "v1", activate=True)
    rows = [{"item_id": f"i{k}", "image_uri": f"s3://b/{k}.jpg"} for k in range(1_000)]
    reports = []
    done = import_and_queue(
        app=app,
        settings=settings,
        sessions=session_factory,
        file=write_csv(tmp_path / "c.csv", rows),
        s3_prefix=None,
        batch_size=64,
        on_sent=lambda *report: reports.append(report),
    )
    assert (done.to_tag, done.batches) == (1_000, 16)
    batches = queue()
    assert len(batches) == 16 and {j for j, _ in batches} == {done.job_id}
    assert all(len(b) <= 64 for _, b in batches)
    assert Counter(i for _, b in batches for i in b) == Counter(f"i{k}" for k in range(1_000))
    client = services.redis_client(services.redis_db_number())
    raw = [json.loads(m) for m in client.lrange(settings.queue, 0, -1)]
    client.close()
    assert {m["headers"]["task"] for m in raw} == {TAG_BATCH}
    assert {m["properties"]["delivery_info"]["routing_key"] for m in raw} == {settings.queue}
    assert len({m["headers"]["id"] for m in raw}) == 16  # a task id per message
    sent = [n for what, n, _ in reports if what.startswith("queueing")]
    assert sent[0] == 0 and sent[-1] == 16 and sent == sorted(sent)


def test_reimport_of_a_tagged_file_publishes_nothing(
    app, settings, session_factory, queue, tmp_path
):
    """Once every item has a tag from the active version, the same file queues no batch."""
    from tagger.enqueue import import_and_queue
    from tagger.scoring import Prediction
    from tagger.tags import save_batch
    from tests.factories import write_csv

    with session_factory.begin() as session:
        add_model_version(session, "v1", activate=True)
    rows = [{"item_id": f"i{k}", "image_uri": f"s3://b/{k}.jpg"} for k in range(10)]
    path = write_csv(tmp_path / "c.csv", rows)

    def run():
        return import_and_queue(
            app=app,
            settings=settings,
            sessions=session_factory,
            file=path,
            s3_prefix=None,
            batch_size=4,
        )

    first = run()
    pred = Prediction("WOMEN", 0.9, "Dresses", 0.8, {"gender": {}, "product": {}})
    with session_factory.begin() as session:
        save_batch(
            session=session,
            job_id=first.job_id,
            model_version="v1",
            predictions={r["item_id"]: pred for r in rows},
            failures={},
        )
    services.redis_client(services.redis_db_number()).delete(settings.queue)
    again = run()
    assert (again.unchanged, again.to_tag, again.batches) == (10, 0, 0)
    assert queue() == []


def test_publish_pending_reports_a_broker_failure_with_the_items_pending(session_factory):
    """Redis refusing the connection: a PublishError naming the job and its pending items."""
    from tagger.celery_app import create_app
    from tagger.enqueue import publish_pending
    from tagger.messages import PublishError
    from tagger.settings import Settings

    job_id = _job(session_factory, 5, batch_size=2)
    down = Settings(broker_url=f"redis://127.0.0.1:{services.free_port()}/0")
    with pytest.raises(PublishError) as info:
        publish_pending(
            app=create_app(down),
            settings=down,
            sessions=session_factory,
            job_id=job_id,
            batch_size=2,
        )
    assert (info.value.job_id, info.value.sent, info.value.batches, info.value.items) == (
        job_id,
        0,
        3,
        5,
    )
