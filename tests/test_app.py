"""tagger.app: the module-level app that Celery's own command line and Flower load."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import pytest

from tests.processes import start_worker, stop

pytestmark = pytest.mark.slow


def _celery(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "celery", "-A", "tagger.app", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_celery_inspect_ping_reaches_a_running_tagger_worker(settings_env, tmp_path):
    """`celery -A tagger.app inspect ping` finds a real `tagger worker` and gets its pong."""
    env = {**os.environ}
    name = f"ping@{socket.gethostname()}"
    worker = start_worker(env, "ping", tmp_path / "worker.log")
    try:
        deadline = time.monotonic() + 60
        while True:
            assert worker.poll() is None, (tmp_path / "worker.log").read_text()[-2000:]
            ping = _celery(env, "inspect", "ping", "-d", name, "--timeout", "2")
            if ping.returncode == 0 or time.monotonic() > deadline:
                break
            time.sleep(1)
    finally:
        stop([worker])
    assert ping.returncode == 0, ping.stdout + ping.stderr
    assert name in ping.stdout and "pong" in ping.stdout, ping.stdout


def test_the_module_level_app_is_the_factory_app_from_the_environment(settings_env):
    """tagger.app.app carries the environment's broker, queue and time limits, and has
    tagger's tasks registered, exactly as `tagger worker` builds its app."""
    code = (
        "from tagger.app import app; from tagger.celery_app import create_app;"
        "from tagger.settings import load_settings; ref = create_app(load_settings());"
        "keys = ('broker_url', 'task_default_queue', 'task_time_limit', 'task_soft_time_limit',"
        " 'broker_transport_options', 'task_acks_late', 'accept_content');"
        "assert all(app.conf[k] == ref.conf[k] for k in keys), keys;"
        "assert 'tagger.tag_batch' in app.tasks and 'tagger.sweep' in app.tasks;"
        "print(app.conf.broker_url)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env={**os.environ}, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == settings_env.broker_url
