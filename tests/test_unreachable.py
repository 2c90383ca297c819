"""Commands meeting a service that is really down (Postgres, Redis, S3): one line on stderr
naming the service and its masked URL, a non-zero exit, no traceback, no password."""

from __future__ import annotations

import base64
import json
import os
import re
from collections import Counter
from datetime import timedelta

import pytest
import sqlalchemy as sa

from tagger.catalogue import CatalogueItem
from tagger.db import Job, JobItem, utcnow
from tagger.importer import import_items
from tagger.jobs import pending_item_ids
from tests.factories import add_model_version, write_csv
from tests.processes import tagger
from tests.redis_server import redis_server
from tests.services import free_port

PASSWORD = "hunter2-never-shown"
EX_UNAVAILABLE = 69


def _with_password(url: str) -> str:
    """``url`` (no password: the test Postgres trusts local users) with PASSWORD added; the
    server ignores it, so only the masking is tested."""
    return sa.engine.make_url(url).set(password=PASSWORD).render_as_string(hide_password=False)


def _masked(url: str) -> str:
    return url.replace(PASSWORD, "***")


def _base_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("TAGGER_")}


def _one_line(result, service: str, url: str) -> str:
    """The single stderr line of a failed command, checked to name ``service`` at ``url``."""
    output = result.stdout + result.stderr
    assert PASSWORD not in output, output
    assert "Traceback" not in output, output
    assert result.returncode == EX_UNAVAILABLE, (result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"error: cannot reach {service} at {_masked(url)}: "), lines[0]
    return lines[0]


def _queued(client, queue: str = "tagger") -> list[tuple[int, list[str]]]:
    """(job id, item ids) of each ``tag_batch`` message waiting in the Celery queue."""
    batches = []
    for raw in client.lrange(queue, 0, -1):
        message = json.loads(raw)
        assert message["headers"]["task"] == "tagger.tag_batch"
        args, _kwargs, _embed = json.loads(base64.b64decode(message["body"]))
        batches.append((args[0], args[1]))
    return batches


# --- Postgres ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ("jobs",),
        ("jobs", "7"),
        ("jobs", "resume", "7"),
        ("tags",),
        ("import", "{catalogue}"),
        ("model", "list"),
        ("retag",),
    ],
    ids=lambda args: "-".join(a for a in args if not a.startswith("{")),
)
def test_postgres_down_is_one_line(args, tmp_path):
    """With nothing listening at the database URL, each command names Postgres and its URL."""
    url = f"postgresql+psycopg2://tagger:{PASSWORD}@127.0.0.1:{free_port()}/tagger"
    catalogue = write_csv(tmp_path / "c.csv", [{"item_id": "a", "image_uri": "s3://b/a.jpg"}])
    env = {**_base_env(), "TAGGER_DATABASE_URL": url}
    result = tagger(env, *(a.format(catalogue=catalogue) for a in args), timeout=120)
    line = _one_line(result, "Postgres", url)
    assert line.endswith(": connection refused"), line


# --- Redis ---------------------------------------------------------------------------------


def test_redis_down_import_and_retag_say_how_to_resume(pg_url, db, session_factory, tmp_path):
    """Import and retag with Redis down name it and the resume command; once Redis is back,
    `jobs resume` queues each job's pending items exactly once, in its batch size."""
    with session_factory.begin() as session:
        add_model_version(session, "v1", activate=True)
    with redis_server(password=PASSWORD) as redis:
        env = {
            **_base_env(),
            "TAGGER_DATABASE_URL": _with_password(pg_url),
            "TAGGER_BROKER_URL": redis.url,
        }

        def catalogue(name: str, n: int):
            rows = [
                {"item_id": f"{name}{i}", "image_uri": f"s3://b/{name}{i}.jpg"} for i in range(n)
            ]
            return str(write_csv(tmp_path / f"{name}.csv", rows))

        up = tagger(env, "import", catalogue("a", 3), "--batch-size", "2")
        assert up.returncode == 0, up.stderr
        first_job = int(up.stdout)
        assert len(_queued(redis.client())) == 2

        redis.stop()
        down = tagger(env, "import", catalogue("b", 5), "--batch-size", "2")
        line = _one_line(down, "Redis", redis.url)
        import_job = int(re.search(r"run `tagger jobs resume (\d+)` once Redis is back", line)[1])
        assert f"job {import_job} is saved with 5 items pending;" in line
        assert "connection refused" in line

        # The first job's items are due again only once it counts as stalled: age it.
        with db.begin() as conn:
            conn.execute(
                sa.update(Job)
                .where(Job.id == first_job)
                .values(updated_at=utcnow() - timedelta(hours=3))
            )
        down = tagger(env, "retag")
        line = _one_line(down, "Redis", redis.url)
        retag_job = int(re.search(r"run `tagger jobs resume (\d+)` once Redis is back", line)[1])
        assert f"job {retag_job} is saved with 3 items pending;" in line

        redis.start()  # same port, same password, an empty queue
        for job_id in (import_job, retag_job):
            resumed = tagger(env, "jobs", "resume", str(job_id))
            assert resumed.returncode == 0, resumed.stderr
            assert PASSWORD not in resumed.stdout + resumed.stderr
        queued = _queued(redis.client())

    with session_factory() as session:
        for job_id in (import_job, retag_job):
            job = session.get(Job, job_id)
            batches = [items for j, items in queued if j == job_id]
            assert all(len(b) <= job.batch_size for b in batches)
            sent = Counter(i for b in batches for i in b)
            pending = pending_item_ids(session=session, job_id=job_id)
            assert sent == Counter(pending) and len(pending) == job.total  # each once
    assert len(queued) == 3 + 1  # b0..b4 in batches of 2; a0..a2 in one batch of 64


def test_resume_with_redis_down_says_resume_again(pg_url, db, session_factory):
    """`jobs resume` that cannot publish names Redis and repeats its own instruction."""
    with session_factory.begin() as session:
        add_model_version(session, "v1", activate=True)
        item = CatalogueItem(item_id="x", image_uri="s3://b/x.jpg")
        job_id = import_items(session=session, items=[item], source="t", batch_size=8).job.id
    url = f"redis://:{PASSWORD}@127.0.0.1:{free_port()}/0"
    env = {**_base_env(), "TAGGER_DATABASE_URL": _with_password(pg_url), "TAGGER_BROKER_URL": url}
    line = _one_line(tagger(env, "jobs", "resume", str(job_id)), "Redis", url)
    assert line.endswith(
        f"job {job_id} is saved with 1 item pending; "
        f"run `tagger jobs resume {job_id}` once Redis is back"
    ), line
    with db.connect() as conn:
        state = conn.scalar(sa.select(JobItem.state).where(JobItem.job_id == job_id))
    assert state == "pending"


# --- S3 ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [("import", "--s3-prefix", "s3://bucket/x/"), ("model", "register", "s3://bucket/model/")],
    ids=["import-s3-prefix", "model-register"],
)
def test_s3_down_is_one_line(args, pg_url, db, tmp_path):
    """With nothing listening at the S3 endpoint, listing and artifact downloads name S3."""
    endpoint = f"http://127.0.0.1:{free_port()}"
    env = {
        **_base_env(),
        "TAGGER_DATABASE_URL": _with_password(pg_url),
        "TAGGER_S3_ENDPOINT_URL": endpoint,
        "TAGGER_MODEL_CACHE_DIR": str(tmp_path / "cache"),
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
    }
    line = _one_line(tagger(env, *args, timeout=300), "S3", endpoint)
    assert line.endswith(": connection refused"), line
