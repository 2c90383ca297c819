"""Worker metrics: what a batch records, how a worker's processes add up (prefork), the
endpoint, and a real `tagger worker` serving its stage timings on /metrics."""

from __future__ import annotations

import logging
import multiprocessing
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tagger import metrics
from tagger.exceptions import CorruptImage, MissingImage, WorkerCrash
from tagger.pipeline import BatchOutcome
from tests.factories import make_s3_catalogue, write_csv
from tests.processes import start_worker, stop, wait_for_job
from tests.services import free_port

SECONDS = {"load": 0.01, "fetch": 0.2, "decode": 0.1, "model": 0.6, "write": 0.09}


def _outcome(tagged: int = 3, version: str = "v1", runtime: str = "keras", **kw) -> BatchOutcome:
    return BatchOutcome(
        job_id=1,
        model_version=version,
        tagged=[f"t{i}" for i in range(tagged)],
        seconds=dict(SECONDS),
        runtime=runtime,
        **kw,
    )


@pytest.fixture
def prom_dir(monkeypatch, tmp_path) -> Path:
    """A worker's metrics directory, as `tagger worker` prepares it, for this test only."""
    path = tmp_path / "prom"
    monkeypatch.setenv(metrics.ENV_VAR, str(path))
    metrics.prepare_directory()
    yield path
    metrics.stop()


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read().decode()


def _sample(text: str, name: str, **labels: str) -> float:
    """The value of one sample in Prometheus text format (labels given must all match)."""
    for line in text.splitlines():
        match = re.fullmatch(r"(\w+)(?:\{(.*)\})? (\S+)", line)
        if match and match[1] == name:
            have = dict(re.findall(r'(\w+)="([^"]*)"', match[2] or ""))
            if all(have.get(k) == v for k, v in labels.items()):
                return float(match[3])
    raise AssertionError(f"no sample {name} {labels} in:\n{text}")


def test_a_batch_records_its_stages_size_images_failures_and_model(prom_dir):
    """One batch: every stage once, its size, images tagged, failures by reason, model."""
    failed = {"b1": CorruptImage("x"), "b2": CorruptImage("y"), "b3": MissingImage("z")}
    metrics.observe_batch(_outcome(tagged=5, failed=failed, version="v7", runtime="openvino"))
    s = metrics.summary()
    assert s["enabled"] and s["batches"] == 1 and s["images_tagged"] == 5
    assert list(s["stages"]) == list(metrics.STAGES)
    assert s["stages"]["model"] == pytest.approx(
        {"batches": 1, "seconds": 0.6, "mean_seconds": 0.6}
    )
    assert s["batch_size_mean"] == 8
    assert s["failures"] == {"corrupt_image": 2, "missing_image": 1}
    assert (s["model_versions"], s["runtimes"]) == (["v7"], ["openvino"])
    assert s["images_per_second"] == pytest.approx(5 / sum(SECONDS.values()))
    assert list(s["last_batch_images_per_second"].values()) == [pytest.approx(5.0)]


def test_split_and_isolated_batches_count_failures_but_no_batch(prom_dir):
    """A split batch records nothing; an item isolated as worker_crash is one failure."""
    metrics.observe_batch(BatchOutcome(job_id=1, model_version="", split=[["a"], ["b"]]))
    metrics.observe_batch(BatchOutcome(job_id=1, model_version="", failed={"a": WorkerCrash()}))
    s = metrics.summary()
    assert (s["batches"], s["stages"], s["failures"]) == (0, {}, {"worker_crash": 1})


def test_a_new_model_version_replaces_the_old_in_the_info_gauge(prom_dir):
    """After a roll-out the process reports only the new version as the one it runs."""
    metrics.observe_batch(_outcome(version="v1"))
    metrics.observe_batch(_outcome(version="v2"))
    s = metrics.summary()
    assert s["model_versions"] == ["v2"] and s["batches"] == 2


def test_a_shadow_batch_counts_but_leaves_the_served_version_in_the_info_gauge(prom_dir):
    """A candidate's shadow batch is counted under its version, yet the process still
    reports the active version as the one it runs."""
    metrics.observe_batch(_outcome(version="v1"))
    metrics.observe_batch(_outcome(version="v2", tagged=4, shadow=True))
    s = metrics.summary()
    assert s["model_versions"] == ["v1"]
    assert (s["batches"], s["images_tagged"]) == (2, 7)


def _child_batch(tagged: int, done, leave) -> None:
    metrics.observe_batch(_outcome(tagged=tagged))
    done.set()
    leave.wait(60)


def _pool_child(tagged: int):
    """A forked process (as the prefork pool makes them) that runs one batch and waits
    until its event is set. Each child has its own event: setting one that a killed child
    waited on would wait for that child to wake."""
    ctx = multiprocessing.get_context("fork")
    done, leave = ctx.Event(), ctx.Event()
    child = ctx.Process(target=_child_batch, args=(tagged, done, leave))
    child.start()
    assert done.wait(30)
    return child, leave


def test_processes_of_one_worker_add_up_and_a_dead_ones_live_gauges_go(prom_dir):
    """This process and two forked ones: counters and histograms are summed; each process
    has its own images/s until it is marked dead, or found dead (killed), while its counts
    stay."""
    metrics.observe_batch(_outcome(tagged=1))
    (marked, leave), (killed, _) = _pool_child(2), _pool_child(4)
    try:
        s = metrics.summary()
        assert (s["batches"], s["images_tagged"], s["stages"]["fetch"]["batches"]) == (3, 7, 3)
        rates = {int(pid): rate for pid, rate in s["last_batch_images_per_second"].items()}
        assert set(rates) == {os.getpid(), marked.pid, killed.pid}
        metrics.mark_dead(marked.pid)
        killed.kill()
        killed.join(30)
        s = metrics.summary()
        assert list(s["last_batch_images_per_second"]) == [str(os.getpid())]
        assert (s["batches"], s["images_tagged"]) == (3, 7)
    finally:
        killed.kill()
        leave.set()
        marked.join(30)


def test_nothing_is_recorded_without_a_directory(monkeypatch, tmp_path):
    """Outside a worker (embedded run, eager tests) observing records nothing at all."""
    monkeypatch.delenv(metrics.ENV_VAR, raising=False)
    metrics.observe_batch(_outcome())
    assert metrics.summary() == {"enabled": False}


def test_prepare_empties_a_users_directory_or_makes_a_private_one(tmp_path):
    """A user's directory loses an earlier run's files; without one, a fresh temp dir."""
    user = tmp_path / "prom"
    user.mkdir()
    (user / "counter_123.db").write_bytes(b"old")
    (user / "keep.txt").write_text("not ours")
    assert metrics.prepare_directory({metrics.ENV_VAR: str(user)}) == str(user)
    assert sorted(p.name for p in user.iterdir()) == ["keep.txt"]
    environ: dict[str, str] = {}
    made = metrics.prepare_directory(environ)
    assert environ[metrics.ENV_VAR] == made and os.listdir(made) == []
    assert made != metrics.prepare_directory({})


def test_importing_the_worker_modules_loads_no_prometheus_client():
    """The app, the tasks and tagger.metrics import prometheus_client only when a worker
    prepares its directory, so its multiprocess mode is chosen after the variable is set."""
    code = (
        "import sys, tagger.metrics, tagger.tasks, tagger.celery_app, tagger.cli;"
        "assert 'prometheus_client' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_the_endpoint_serves_every_metric_by_its_dashboard_name(prom_dir):
    """/metrics on the port given: the seven names the dashboards are built on."""
    port = free_port()
    assert metrics.serve(port, addr="127.0.0.1") == port
    metrics.observe_batch(_outcome(tagged=2, failed={"x": MissingImage()}))
    text = _get(f"http://127.0.0.1:{port}/metrics")
    assert _sample(text, "tagger_batches_total", model_version="v1", runtime="keras") == 1
    assert _sample(text, "tagger_batch_size_bucket", le="2.0") == 0
    assert _sample(text, "tagger_batch_size_bucket", le="4.0") == 1
    assert _sample(text, "tagger_stage_seconds_count", stage="decode") == 1
    assert _sample(text, "tagger_images_tagged_total", model_version="v1") == 2
    assert _sample(text, "tagger_item_failures_total", reason="missing_image") == 1
    assert _sample(text, "tagger_batch_images_per_second") == pytest.approx(2.0)
    assert _sample(text, "tagger_model_info", model_version="v1", runtime="keras") == 1


def test_a_taken_port_is_a_warning_naming_it_and_the_worker_goes_on(prom_dir, caplog):
    """A second worker on a host finds the port taken: a warning, no endpoint, no error."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with caplog.at_level(logging.WARNING, logger="tagger.metrics"):
            assert metrics.serve(port, addr="127.0.0.1") is None
    assert f"port {port}" in caplog.text and "TAGGER_METRICS_PORT" in caplog.text
    metrics.observe_batch(_outcome())
    assert metrics.summary()["batches"] == 1 and metrics.summary()["port"] is None
    assert metrics.serve(0) is None  # 0: no endpoint


# --- a real worker -------------------------------------------------------------------
@pytest.mark.slow
def test_a_prefork_worker_serves_its_stage_timings_on_metrics(
    db, settings_env, tagger_cli, s3_client, bucket, artifact, tmp_path
):
    """A real `tagger worker` (prefork, two processes) runs a 12-item job in 3 batches (one
    item broken): its /metrics has 3 observations per stage, 11 images tagged and the
    failure by reason, summed over its processes."""
    port = free_port()
    env = {**os.environ, "TAGGER_LOG_LEVEL": "INFO", "TAGGER_METRICS_PORT": str(port)}
    rows, broken = make_s3_catalogue(s3_client, bucket, n=12, broken_every=12)
    reg = tagger_cli(env, "model", "register", artifact, "--activate", "--version", "m1")
    assert reg.returncode == 0, reg.stderr
    imp = tagger_cli(env, "import", str(write_csv(tmp_path / "c.csv", rows)), "--batch-size", "4")
    assert imp.returncode == 0, imp.stderr
    log = tmp_path / "worker.log"
    worker = start_worker(env, "metrics", log, "--concurrency", "2")
    try:
        job = wait_for_job(db, int(imp.stdout), [worker])
        url = f"http://127.0.0.1:{port}/metrics"
        deadline = time.monotonic() + 30
        while True:  # the last batch is observed just after its rows are committed
            text = _get(url)
            if "tagger_batches_total" in text and _sample(text, "tagger_batches_total") == 3:
                break
            assert time.monotonic() < deadline, text
            time.sleep(0.2)
    finally:
        stop([worker])
    assert (job.done, job.failed) == (11, 1)
    assert log.read_text().count("model call") == 3  # the batches the worker ran
    for stage in metrics.STAGES:
        assert _sample(text, "tagger_stage_seconds_count", stage=stage) == 3
        assert _sample(text, "tagger_stage_seconds_sum", stage=stage) > 0
    assert _sample(text, "tagger_images_tagged_total", model_version="m1") == job.done == 11
    [reason] = broken.values()
    assert _sample(text, "tagger_item_failures_total", reason=reason) == 1
    assert _sample(text, "tagger_batch_size_count") == 3
    assert _sample(text, "tagger_batch_size_sum") == 12
    assert _sample(text, "tagger_model_info", model_version="m1") == 1
    directory = re.search(r"metrics: serving \S+ from (\S+)", log.read_text())
    assert directory and not Path(directory[1]).exists()  # the worker's private dir is gone
