"""`tagger stats`: the queue depth from Redis and, from every live worker over the broker,
its batch metrics (stage timings, images, failures, model)."""

from __future__ import annotations

import json
import os
import socket
import time

import pytest

from tagger.celery_app import create_app
from tagger.messages import publish_batches
from tagger.metrics import STAGES
from tests.factories import make_s3_catalogue, write_csv
from tests.processes import start_worker, stop, wait_for_job
from tests.services import free_port


def test_stats_shows_the_queue_depth_and_says_when_no_worker_answers(settings_env, tagger_cli):
    """Three batches queued and no worker: the queue holds 3, and the command says that no
    worker answered (exit 0: an idle deployment is not an error)."""
    app = create_app(settings_env)
    publish_batches(app, queue=settings_env.queue, job_id=1, batches=[["a"], ["b"], ["c"]])
    app.close()
    env = dict(os.environ)
    out = tagger_cli(env, "stats", "--format", "json", "--timeout", "0.5")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {
        "queue": {"queue": "tagger", "waiting": 3, "unacked": 0},
        "workers": [],
    }
    assert "no worker answered within 0.5 s" in out.stderr
    table = tagger_cli(env, "stats", "--timeout", "0.5")
    assert table.returncode == 0, table.stderr
    assert table.stdout.strip() == "queue tagger: 3 waiting, 0 delivered and not acked"


def test_stats_with_redis_down_is_one_line_naming_it(settings_env, tagger_cli):
    """No broker to ask: one line naming Redis and its URL, exit 69 (try again later)."""
    url = f"redis://127.0.0.1:{free_port()}/0"
    out = tagger_cli({**os.environ, "TAGGER_BROKER_URL": url}, "stats")
    assert out.returncode == 69, out.stderr
    assert out.stderr.strip() == f"error: cannot reach Redis at {url}: connection refused"


def _stats(tagger_cli, env: dict[str, str], *args: str) -> dict:
    out = tagger_cli(env, "stats", "--format", "json", *args)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


@pytest.mark.slow
def test_a_running_worker_answers_with_its_stage_timings(
    db, settings_env, tagger_cli, s3_client, bucket, artifact, tmp_path
):
    """A worker (threads pool: batches recorded in its main process) that ran an 8-item job
    in 2 batches reports 2 batches through every stage, 8 images, its model and endpoint; a
    second worker on the same host (prefork), whose metrics port is taken, logs a warning
    naming the port and is listed too, with nothing run yet."""
    port = free_port()
    env = {**os.environ, "TAGGER_LOG_LEVEL": "INFO", "TAGGER_METRICS_PORT": str(port)}
    rows, _ = make_s3_catalogue(s3_client, bucket, n=8)
    reg = tagger_cli(env, "model", "register", artifact, "--activate", "--version", "s1")
    assert reg.returncode == 0, reg.stderr
    imp = tagger_cli(env, "import", str(write_csv(tmp_path / "c.csv", rows)), "--batch-size", "4")
    assert imp.returncode == 0, imp.stderr
    logs = [tmp_path / "w1.log", tmp_path / "w2.log"]
    workers = [start_worker(env, "w1", logs[0], "--pool", "threads", "--concurrency", "2")]
    host = socket.gethostname()
    try:
        wait_for_job(db, int(imp.stdout), workers)
        workers.append(start_worker(env, "w2", logs[1]))
        deadline = time.monotonic() + 60
        while True:  # w2 starting; w1 observes its last batch just after committing it
            stats = _stats(tagger_cli, env)
            listed = {w["worker"]: w for w in stats["workers"]}
            if len(listed) == 2 and listed[f"w1@{host}"]["batches"] == 2:
                break
            assert time.monotonic() < deadline, stats
            assert all(w.poll() is None for w in workers), logs[-1].read_text()[-2000:]
            time.sleep(0.5)
        table = tagger_cli(env, "stats")
    finally:
        stop(workers)

    assert stats["queue"] == {"queue": "tagger", "waiting": 0, "unacked": 0}
    w1, w2 = listed[f"w1@{host}"], listed[f"w2@{host}"]
    assert (w1["pool"], w1["port"], w1["batches"], w1["images_tagged"]) == ("thread", port, 2, 8)
    assert list(w1["stages"]) == list(STAGES)
    for stage in STAGES:
        assert w1["stages"][stage]["batches"] == 2 and w1["stages"][stage]["mean_seconds"] > 0
    assert w1["model_versions"] == ["s1"] and w1["runtimes"]
    assert w1["images_per_second"] > 0 and w1["batch_size_mean"] == 4
    assert w1["failures"] == {} and w1["active_batches"] == 0
    assert (w2["pool"], w2["port"], w2["batches"], w2["stages"]) == ("prefork", None, 0, {})
    assert f"port {port}" in logs[1].read_text()  # the warning naming the taken port
    assert table.returncode == 0, table.stderr
    assert "queue tagger: 0 waiting" in table.stdout
    assert f"w1@{host}" in table.stdout and f"w2@{host}" in table.stdout
    print(json.dumps(stats, indent=2), table.stdout, sep="\n")  # real samples, for `pytest -s`
