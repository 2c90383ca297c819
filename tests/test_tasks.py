"""The tag_batch task's decisions: retry what is transient, record what is not, and never
lose the items of a batch. Runs the real task through Celery's eager ``apply``."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from tagger import tasks
from tagger.catalogue import CatalogueItem
from tagger.celery_app import create_app
from tagger.db import Failure, Job, Tag
from tagger.importer import import_items
from tagger.messages import TAG_BATCH
from tagger.pipeline import BatchTagger
from tagger.registry import register_artifact
from tagger.settings import Settings
from tagger.storage import make_s3_client
from tests.factories import make_s3_catalogue
from tests.services import free_port

pytestmark = pytest.mark.slow


@pytest.fixture
def job(session_factory, settings_env, s3_client, bucket, artifact):
    rows, _ = make_s3_catalogue(s3_client, bucket, n=6)
    with session_factory.begin() as s:
        register_artifact(
            session=s, settings=settings_env, uri=artifact, version="v1", activate=True
        )
        plan = import_items(
            session=s, items=[CatalogueItem(**r) for r in rows], source="t", batch_size=10
        )
    return plan.job.id, plan.batches[0]


def _run(settings, job_id, ids):
    app = create_app(settings)
    return app.tasks[TAG_BATCH].apply(args=[job_id, ids])


def _failures(session_factory):
    with session_factory() as s:
        return {f.item_id: (f.reason, f.attempts) for f in s.scalars(sa.select(Failure))}


def test_storage_outage_is_retried_then_recorded(monkeypatch, session_factory, settings_env, job):
    """Unreachable S3: the batch is retried max_retries times, then each item is storage_error."""
    settings = settings_env.model_copy(update={"task_max_retries": 2})
    down = Settings(
        s3_endpoint_url=f"http://127.0.0.1:{free_port()}",
        s3_max_attempts=1,
        s3_connect_timeout=0.3,
        s3_read_timeout=0.3,
    )
    runs = []
    tagger = BatchTagger(settings, session_factory, s3_client_factory=lambda: make_s3_client(down))
    real_run = tagger.run
    monkeypatch.setattr(
        tagger, "run", lambda *a, **kw: runs.append(kw["final"]) or real_run(*a, **kw)
    )
    monkeypatch.setattr(tasks, "_tagger", tagger)
    job_id, ids = job
    result = _run(settings, job_id, ids)
    assert result.successful(), result.traceback
    assert runs == [False, False, True]  # two retries, then the final attempt records
    assert {reason for reason, _ in _failures(session_factory).values()} == {"storage_error"}
    with session_factory() as s:
        assert (s.get(Job, job_id).failed, s.get(Job, job_id).status) == (6, "finished")


def test_unexpected_error_fails_the_items_not_the_job(
    monkeypatch, session_factory, settings_env, job
):
    """A bug in the batch code marks its items internal_error so the job can still finish."""

    def broken_decode(*_a, **_kw):
        raise RuntimeError("boom")

    monkeypatch.setattr("tagger.pipeline.decode_many", broken_decode)
    monkeypatch.setattr(tasks, "_tagger", BatchTagger(settings_env, session_factory))
    job_id, ids = job
    result = _run(settings_env, job_id, ids)
    assert result.successful() and result.result == {"job_id": job_id, "tagged": 0, "failed": 6}
    failures = _failures(session_factory)
    assert set(failures) == set(ids) and {r for r, _ in failures.values()} == {"internal_error"}
    with session_factory() as s:
        assert s.scalar(sa.select(sa.func.count()).select_from(Tag)) == 0
