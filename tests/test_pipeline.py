"""One batch end to end in-process: S3 (moto server) → decode → one model call → Postgres."""

from __future__ import annotations

from unittest import mock

import pytest
import sqlalchemy as sa

from tagger.catalogue import CatalogueItem
from tagger.db import Failure, Job, Tag
from tagger.importer import import_items
from tagger.pipeline import BatchTagger
from tagger.registry import register_artifact
from tagger.settings import Settings
from tests.factories import make_s3_catalogue

pytestmark = pytest.mark.slow


@pytest.fixture
def setup(session_factory, settings_env, s3_client, bucket, artifact):
    """12 items on S3, four of them broken (one of each kind), imported as one job."""
    rows, broken = make_s3_catalogue(s3_client, bucket, n=12, broken_every=3)
    with session_factory.begin() as s:
        version = register_artifact(
            session=s, settings=settings_env, uri=artifact, version="v1", activate=True
        ).version
        plan = import_items(
            session=s, items=[CatalogueItem(**r) for r in rows], source="t", batch_size=100
        )
    return {"job_id": plan.job.id, "ids": plan.batches[0], "broken": broken, "version": version}


def _rows(session_factory, model):
    with session_factory() as s:
        return s.scalars(sa.select(model)).all()


def test_bad_images_become_failures_and_the_rest_is_tagged(session_factory, settings_env, setup):
    """Missing, non-image, truncated and oversize images fail alone; 8 good items are tagged."""
    tagger = BatchTagger(settings_env, session_factory)
    outcome = tagger.run(setup["job_id"], setup["ids"] + ["no-such-item"])
    assert outcome.unknown == ["no-such-item"]
    tags = _rows(session_factory, Tag)
    failures = {f.item_id: f.reason for f in _rows(session_factory, Failure)}
    assert failures == setup["broken"]
    assert sorted(failures.values()) == [
        "corrupt_image",
        "missing_image",
        "not_an_image",
        "too_large",
    ]
    assert sorted(t.item_id for t in tags) == sorted(set(setup["ids"]) - set(setup["broken"]))
    assert {t.model_version for t in tags} == {"v1"}
    assert all(t.gender in ("MEN", "WOMEN") and 0 <= t.product_score <= 1 for t in tags)
    with session_factory() as s:
        job = s.get(Job, setup["job_id"])
        assert (job.status, job.done, job.failed, job.total) == ("finished", 8, 4, 12)


def test_model_is_called_once_per_batch(session_factory, settings_env, setup):
    """A batch of 12 ids makes exactly one model call, with every good image in it."""
    tagger = BatchTagger(settings_env, session_factory)
    with session_factory() as s:
        from tagger.registry import get_active_model_version

        model = tagger.model_for(get_active_model_version(session=s))
    real = model.keras_model.predict_on_batch
    with mock.patch.object(model.keras_model, "predict_on_batch", wraps=real) as spy:
        tagger.run(setup["job_id"], setup["ids"][:6])
        tagger.run(setup["job_id"], setup["ids"][6:])
    assert spy.call_count == 2
    sizes = [call.args[0]["image"].shape[0] for call in spy.call_args_list]
    assert sizes == [4, 4]  # 6 ids per batch, 2 broken in each


def test_running_a_batch_twice_leaves_the_same_rows(session_factory, settings_env, setup):
    """At-least-once delivery: a second run of the batch changes no counts and no tags."""
    tagger = BatchTagger(settings_env, session_factory)
    tagger.run(setup["job_id"], setup["ids"])
    first = {t.item_id: (t.product_type, t.product_score) for t in _rows(session_factory, Tag)}
    tagger.run(setup["job_id"], setup["ids"])
    second = {t.item_id: (t.product_type, t.product_score) for t in _rows(session_factory, Tag)}
    assert first == second and len(second) == 8
    assert len(_rows(session_factory, Failure)) == 4
    with session_factory() as s:
        job = s.get(Job, setup["job_id"])
        assert (job.done, job.failed) == (8, 4)


def test_storage_outage_defers_items_until_the_final_attempt(session_factory, settings_env, setup):
    """Unreachable storage: nothing is written on early attempts, storage_error on the last."""
    from tests.services import free_port

    down = Settings(
        s3_endpoint_url=f"http://127.0.0.1:{free_port()}",
        s3_max_attempts=1,
        s3_connect_timeout=0.5,
        s3_read_timeout=0.5,
    )
    from tagger.storage import make_s3_client

    tagger = BatchTagger(
        settings_env, session_factory, s3_client_factory=lambda: make_s3_client(down)
    )
    early = tagger.run(setup["job_id"], setup["ids"], final=False)
    assert len(early.deferred) == 12 and not early.failed and not early.tagged
    assert _rows(session_factory, Failure) == []
    final = tagger.run(setup["job_id"], setup["ids"], final=True)
    assert not final.deferred
    reasons = {f.reason for f in _rows(session_factory, Failure)}
    assert reasons == {"storage_error"}
