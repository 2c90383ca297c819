"""Fixtures: real Postgres (own database, migrated with Alembic), Redis (own db, flushed
around each test) and S3 (moto server over HTTP). Factories live in tests/factories.py."""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Callable, Iterator
from functools import partial

import boto3
import pytest
import sqlalchemy as sa

from tests import services

# The tests never talk to real AWS: credentials for moto, set before any client is made.
os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """URL of a fresh Postgres database for this test run, migrated to head."""
    with services.postgres_database() as url:
        services.alembic_upgrade(url)
        yield url


@pytest.fixture(scope="session")
def pg_engine(pg_url: str) -> Iterator[sa.Engine]:
    engine = sa.create_engine(pg_url)
    yield engine
    engine.dispose()


@pytest.fixture
def db(pg_engine: sa.Engine) -> Iterator[sa.Engine]:
    """The Postgres engine with every table emptied before the test."""
    from tagger.db import truncate_all

    truncate_all(pg_engine)
    yield pg_engine


@pytest.fixture
def session_factory(db: sa.Engine):
    from tagger.db import make_session_factory

    return make_session_factory(db)


@pytest.fixture(params=["postgres", "sqlite"])
def sessions(request, tmp_path):
    """A session factory on Postgres and on SQLite (the embedded mode), each migrated to
    head: for behaviour that must be the same on both."""
    from tagger.db import make_engine, make_session_factory, upgrade

    if request.param == "postgres":
        yield request.getfixturevalue("session_factory")
        return
    url = f"sqlite:///{tmp_path / 'embedded.db'}"
    upgrade(url)
    engine = make_engine(url)
    yield make_session_factory(engine)
    engine.dispose()


@pytest.fixture(scope="session")
def redis_db() -> int:
    return services.redis_db_number()


@pytest.fixture
def redis_url(redis_db: int) -> Iterator[str]:
    """A Redis db of our own, flushed before and after the test."""
    client = services.redis_client(redis_db)
    client.flushdb()
    yield f"redis://{services.REDIS_HOST}:{services.REDIS_PORT}/{redis_db}"
    client.flushdb()
    client.close()


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    with services.moto_server() as url:
        yield url


@pytest.fixture
def s3_client(s3_endpoint: str):
    return boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")


@pytest.fixture
def bucket(s3_client) -> str:
    """A new, empty bucket on the moto server."""
    name = f"test-{uuid.uuid4().hex[:12]}"
    s3_client.create_bucket(Bucket=name)
    return name


@pytest.fixture
def settings_env(monkeypatch, pg_url, redis_url, s3_endpoint, tmp_path):
    """TAGGER_* variables pointing at the test services; returns a Settings built from them."""
    from tagger.settings import Settings

    monkeypatch.setenv("TAGGER_DATABASE_URL", pg_url)
    monkeypatch.setenv("TAGGER_BROKER_URL", redis_url)
    monkeypatch.setenv("TAGGER_S3_ENDPOINT_URL", s3_endpoint)
    monkeypatch.setenv("TAGGER_MODEL_CACHE_DIR", str(tmp_path / "model-cache"))
    # No metrics endpoint unless a test asks for a port: test workers would otherwise all
    # try 9808 (and meet a developer's running worker there).
    monkeypatch.setenv("TAGGER_METRICS_PORT", "0")
    return Settings()


@pytest.fixture(scope="session")
def artifact(tmp_path_factory) -> str:
    """An untrained model of the real architecture at 32 px, saved once per test run."""
    from tests.factories import build_artifact

    return str(build_artifact(tmp_path_factory.mktemp("artifact") / "model", image_size=32))


@pytest.fixture
def tagger_cli(monkeypatch, capfd) -> Callable[..., subprocess.CompletedProcess]:
    """``tagger_cli(env, *args)``: `tagger ARGS` run in this process (``tagger.cli.run``)
    with exactly ``env`` as its environment while it runs, returning what
    ``tests.processes.tagger`` returns for a process of its own (returncode, stdout, stderr)
    without an interpreter start per command. Workers stay real processes (``start_worker``,
    given their environment explicitly)."""
    from tests.processes import tagger_here

    return partial(tagger_here, monkeypatch, capfd)


def pytest_configure(config):
    # Keras unless a test asks for OpenVINO (TAGGER_RUNTIME=openvino in its environment):
    # converting a model costs ~20 s per artifact; tests/test_runtime.py and
    # tests/test_openvino_e2e.py cover the default runtime. Set here, before any test, so
    # Settings built directly and every worker process started from os.environ agree.
    os.environ.setdefault("TAGGER_RUNTIME", "keras")


def pytest_collection_modifyitems(config, items):
    """`make test` runs the suite in two processes (pytest-xdist, ``-n 2 --dist
    loadgroup``). Every test that starts real `tagger worker` processes joins one group,
    so those run one after another in one process while the other takes everything else:
    they spend most of their time waiting (for a worker to start, a time limit, Redis's
    visibility timeout), and their timing bounds assume no second worker test competes
    with them for the machine."""
    from tests.processes import start_worker

    for item in items:
        module = getattr(item, "module", None)
        if module is not None and getattr(module, "start_worker", None) is start_worker:
            item.add_marker(pytest.mark.xdist_group("workers"))
