"""Commands meeting a service that is really down (Postgres, Redis, S3): one line on stderr
naming the service and its masked URL, a non-zero exit, no traceback, no password. The
commands run in this process (``tagger.cli.run``); a restarted Redis is a real server."""

from __future__ import annotations

import base64
import json
import os
import re
from collections import Counter
from datetime import timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from tagger.catalogue import CatalogueItem
from tagger.db import Job, utcnow
from tagger.importer import import_items
from tagger.ledger import item_states, pending_ids
from tests.factories import add_model_version, write_csv
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
def test_postgres_down_is_one_line(args, tagger_cli, tmp_path):
    """With nothing listening at the database URL, each command names Postgres and its URL."""
    url = f"postgresql+psycopg2://tagger:{PASSWORD}@127.0.0.1:{free_port()}/tagger"
    catalogue = write_csv(tmp_path / "c.csv", [{"item_id": "a", "image_uri": "s3://b/a.jpg"}])
    env = {**_base_env(), "TAGGER_DATABASE_URL": url}
    result = tagger_cli(env, *(a.format(catalogue=catalogue) for a in args))
    line = _one_line(result, "Postgres", url)
    assert line.endswith(": connection refused"), line


# --- Redis ---------------------------------------------------------------------------------


def test_redis_down_import_and_retag_say_how_to_resume(
    pg_url, db, session_factory, tagger_cli, tmp_path
):
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

        up = tagger_cli(env, "import", catalogue("a", 3), "--batch-size", "2")
        assert up.returncode == 0, up.stderr
        first_job = int(up.stdout)
        assert len(_queued(redis.client())) == 2

        redis.stop()
        down = tagger_cli(env, "import", catalogue("b", 5), "--batch-size", "2")
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
        down = tagger_cli(env, "retag")
        line = _one_line(down, "Redis", redis.url)
        retag_job = int(re.search(r"run `tagger jobs resume (\d+)` once Redis is back", line)[1])
        assert f"job {retag_job} is saved with 3 items pending;" in line

        redis.start()  # same port, same password, an empty queue
        for job_id in (import_job, retag_job):
            resumed = tagger_cli(env, "jobs", "resume", str(job_id))
            assert resumed.returncode == 0, resumed.stderr
            assert PASSWORD not in resumed.stdout + resumed.stderr
        queued = _queued(redis.client())

    with session_factory() as session:
        for job_id in (import_job, retag_job):
            job = session.get(Job, job_id)
            batches = [items for j, items in queued if j == job_id]
            assert all(len(b) <= job.batch_size for b in batches)
            sent = Counter(i for b in batches for i in b)
            pending = pending_ids(session=session, job_id=job_id)
            assert sent == Counter(pending) and len(pending) == job.total  # each once
    assert len(queued) == 3 + 1  # b0..b4 in batches of 2; a0..a2 in one batch of 64


def test_resume_with_redis_down_says_resume_again(pg_url, db, session_factory, tagger_cli):
    """`jobs resume` that cannot publish names Redis and repeats its own instruction."""
    with session_factory.begin() as session:
        add_model_version(session, "v1", activate=True)
        item = CatalogueItem(item_id="x", image_uri="s3://b/x.jpg")
        job_id = import_items(session=session, items=[item], source="t", batch_size=8).job.id
    url = f"redis://:{PASSWORD}@127.0.0.1:{free_port()}/0"
    env = {**_base_env(), "TAGGER_DATABASE_URL": _with_password(pg_url), "TAGGER_BROKER_URL": url}
    line = _one_line(tagger_cli(env, "jobs", "resume", str(job_id)), "Redis", url)
    assert line.endswith(
        f"job {job_id} is saved with 1 item pending; "
        f"run `tagger jobs resume {job_id}` once Redis is back"
    ), line
    with Session(db) as session:
        assert item_states(session=session, job_id=job_id) == {"x": "pending"}


# --- S3 ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [("import", "--s3-prefix", "s3://bucket/x/"), ("model", "register", "s3://bucket/model/")],
    ids=["import-s3-prefix", "model-register"],
)
def test_s3_down_is_one_line(args, pg_url, db, tagger_cli, tmp_path):
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
    line = _one_line(tagger_cli(env, *args), "S3", endpoint)
    assert line.endswith(": connection refused"), line


# --- the mapping itself, in-process (fast) ---------------------------------------------------


def _settings(**kw):
    from tagger.settings import Settings

    base = {
        "database_url": f"postgresql+psycopg2://tagger:{PASSWORD}@127.0.0.1:{free_port()}/tagger",
        "broker_url": f"redis://:{PASSWORD}@127.0.0.1:{free_port()}/0",
        "s3_endpoint_url": f"http://127.0.0.1:{free_port()}",
        "s3_max_attempts": 1,
    }
    return Settings(**{**base, **kw})


def _raised(fn) -> BaseException:
    with pytest.raises(Exception) as info:
        fn()
    return info.value


def test_refused_postgres_connect_maps_to_masked_url():
    """A real refused psycopg2 connect becomes the Postgres line with exit 69."""
    from tagger.db import make_engine
    from tagger.service_errors import user_error

    s = _settings()
    exc = _raised(lambda: make_engine(s.database_url).connect())
    failure = user_error(exc, s)
    assert failure.exit_code == EX_UNAVAILABLE
    assert (
        failure.message == f"cannot reach Postgres at {_masked(s.database_url)}: connection refused"
    )


def test_libpq_message_without_socket_error_is_shortened():
    """A server-side refusal keeps libpq's reason, without the "connection to server" preamble."""
    from psycopg2 import OperationalError as PgError
    from sqlalchemy.exc import OperationalError

    from tagger.service_errors import user_error

    orig = PgError(
        'connection to server at "db", port 5432 failed: FATAL:  database "x" does not exist\n'
    )
    exc = OperationalError(None, None, orig)
    message = user_error(exc, _settings()).message
    assert message.endswith(': database "x" does not exist'), message


def test_query_errors_are_not_taken_for_an_outage():
    """An OperationalError from a statement on a live connection (a deadlock) is not mapped."""
    from sqlalchemy.exc import OperationalError

    from tagger.service_errors import user_error

    exc = OperationalError("UPDATE jobs SET done = 1", {}, Exception("deadlock detected"))
    assert user_error(exc, _settings()) is None
    assert user_error(ValueError("a bug"), _settings()) is None


def test_sqlite_that_cannot_be_opened_is_named():
    """An unopenable SQLite file says SQLite, not Postgres."""
    from tagger.db import make_engine
    from tagger.service_errors import user_error

    s = _settings(database_url="sqlite:////nonexistent-dir/x.db")
    exc = _raised(lambda: make_engine(s.database_url).connect())
    message = user_error(exc, s).message
    assert (
        message
        == "cannot open SQLite at sqlite:////nonexistent-dir/x.db: unable to open database file"
    )


def test_s3_listing_head_and_artifact_download_name_the_endpoint(tmp_path):
    """Listing and artifact downloads against a dead endpoint name S3."""
    from tagger.artifact_cache import resolve_artifact
    from tagger.listing import list_images
    from tagger.service_errors import user_error
    from tagger.storage import make_s3_client

    s = _settings()
    client = make_s3_client(s)
    attempts = [
        lambda: list(list_images("s3://bucket/x/", s3_client=client)),
        lambda: resolve_artifact("s3://bucket/model/", cache_dir=tmp_path, s3_client=client),
    ]
    for attempt in attempts:
        failure = user_error(_raised(attempt), s)
        assert failure.exit_code == EX_UNAVAILABLE
        assert failure.message == f"cannot reach S3 at {s.s3_endpoint_url}: connection refused"


def test_aws_endpoint_is_taken_from_the_error():
    """Without an endpoint setting (AWS itself), the host botocore tried is named."""
    from botocore.exceptions import EndpointConnectionError

    from tagger.service_errors import user_error

    exc = EndpointConnectionError(endpoint_url="https://s3.eu-west-1.amazonaws.com/b?list-type=2")
    message = user_error(exc, _settings(s3_endpoint_url=None)).message
    assert message.startswith("cannot reach S3 at https://s3.eu-west-1.amazonaws.com: ")


def test_passwords_in_driver_text_are_scrubbed():
    """Whatever a driver says, a password from the settings never reaches the line."""
    from redis.exceptions import AuthenticationError

    from tagger.exceptions import ConfigError
    from tagger.service_errors import user_error

    s = _settings()
    leaky = AuthenticationError(f"wrong password {PASSWORD}")
    assert PASSWORD not in user_error(leaky, s).message
    mine = user_error(ConfigError(f"bad {PASSWORD}\nsecond line"), s)
    assert mine.exit_code == 1 and mine.message == "bad *** second line"


def test_without_settings_the_service_is_still_named():
    """When the settings cannot be read, the line names the service without a URL."""
    from redis.exceptions import ConnectionError as RedisConnectionError

    from tagger.service_errors import user_error

    assert user_error(RedisConnectionError("boom"), None).message == "cannot reach Redis: boom"
    # A bare socket error is not attributed to any service: it is not ours to explain.
    assert user_error(ConnectionRefusedError(111, "Connection refused"), None) is None
