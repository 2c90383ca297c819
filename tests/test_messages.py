"""Publishing ``tag_batch`` messages: what a consumer receives, progress reports, and a
PublishError that says how far it got."""

from __future__ import annotations

import base64
import json

import pytest

from tagger.messages import TAG_BATCH, PublishError, publish_batches
from tests import services


@pytest.fixture
def settings(redis_url):
    from tagger.settings import Settings

    return Settings(database_url="sqlite:///unused.db", broker_url=redis_url)


def test_one_message_per_batch_with_progress(settings, redis_db):
    """Each batch is one ``tag_batch`` message on the queue; ``on_sent`` hears 0 first,
    then each message sent, all with the job's description and the batch count."""
    from tagger.celery_app import create_app

    reports = []
    sent = publish_batches(
        create_app(settings),
        queue=settings.queue,
        job_id=7,
        batches=[["a", "b"], ["c"]],
        on_sent=lambda *report: reports.append(report),
    )
    assert sent == 2
    assert reports == [("queueing job 7", n, 2) for n in (0, 1, 2)]
    client = services.redis_client(redis_db)
    messages = [json.loads(raw) for raw in client.lrange(settings.queue, 0, -1)]
    client.close()
    assert {m["headers"]["task"] for m in messages} == {TAG_BATCH}
    bodies = [json.loads(base64.b64decode(m["body"]))[0] for m in messages]
    assert sorted(bodies) == [[7, ["a", "b"]], [7, ["c"]]]


def test_failed_publish_names_redis_and_the_resume_command():
    """A real refused publish raises PublishError; its one line adds the resume instruction."""
    from tagger.celery_app import create_app
    from tagger.service_errors import user_error
    from tagger.settings import Settings

    url = f"redis://:pw-xyz-123@127.0.0.1:{services.free_port()}/0"
    s = Settings(broker_url=url, database_url="sqlite:///unused.db")
    with pytest.raises(PublishError) as info:
        publish_batches(create_app(s), queue=s.queue, job_id=12, batches=[["a", "b"], ["c"]])
    exc = info.value
    assert (exc.job_id, exc.sent, exc.batches, exc.items) == (12, 0, 2, 3)
    assert "run `tagger jobs resume 12` once Redis is back" in str(exc)
    assert user_error(exc, s).message == (
        f"cannot reach Redis at {url.replace('pw-xyz-123', '***')}: connection refused; "
        "job 12 is saved with 3 items pending; run `tagger jobs resume 12` once Redis is back"
    )
