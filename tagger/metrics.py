"""A worker's per-stage metrics for Prometheus, safe under Celery's prefork pool.

prometheus_client keeps the values in per-process files under PROMETHEUS_MULTIPROC_DIR:
``prepare_directory`` sets it in the worker's main process before the pool forks (a
private temp dir, or the user's emptied of an earlier run's files); every process running
batches records them (``observe_batch``), and a child leaving says so (``mark_dead``); the
main process merges the files to serve ``/metrics`` (``serve``) and for `tagger stats`
(``summary``). The metric names are a contract with the dashboards. prometheus_client is
imported only inside the functions: nothing happens until a worker starts.
"""

from __future__ import annotations

import atexit
import glob
import logging
import os
import shutil
import tempfile
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, MutableMapping
    from wsgiref.simple_server import WSGIServer

    from tagger.pipeline import BatchOutcome

log = logging.getLogger(__name__)

ENV_VAR = "PROMETHEUS_MULTIPROC_DIR"
STAGES = ("load", "fetch", "decode", "model", "write")
BATCH_SIZE_BUCKETS = tuple(float(2**i) for i in range(11))  # 1, 2, 4, ..., 1024 items
# From a 5 ms write to a model load or a slow CPU model call of minutes.
STAGE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class _Metrics:
    """One process's metric objects. Registered nowhere: in multiprocess mode the values
    live in the directory's files, and the collectors read those."""

    def __init__(self) -> None:
        from prometheus_client import Counter, Gauge, Histogram

        own = {"registry": None}
        model = ["model_version", "runtime"]
        self.batches = Counter("tagger_batches_total", "Batches run.", model, **own)
        self.batch_size = Histogram(
            "tagger_batch_size", "Items per batch.", buckets=BATCH_SIZE_BUCKETS, **own
        )
        self.stage_seconds = Histogram(
            "tagger_stage_seconds", "Seconds per stage.", ["stage"], buckets=STAGE_BUCKETS, **own
        )
        self.images = Counter(
            "tagger_images_tagged_total", "Images tagged.", ["model_version"], **own
        )
        self.failures = Counter("tagger_item_failures_total", "Failed items.", ["reason"], **own)
        # liveall: one series per process (pid label), dropped when the process goes. A
        # worker with one process per GPU shows each model's own rate, and their sum is the
        # worker's rate while all are busy; "mostrecent" would keep one number per worker
        # that flips between processes and stays after the process that set it died.
        self.images_per_second = Gauge(
            "tagger_batch_images_per_second",
            "Images tagged / wall seconds of the process's last batch.",
            multiprocess_mode="liveall",
            **own,
        )
        self.model_info = Gauge(
            "tagger_model_info", "1: the model run.", model, multiprocess_mode="liveall", **own
        )
        self.model: tuple[str, str] | None = None


_metrics: _Metrics | None = None
_bound_dir: str | None = None  # the directory _metrics writes into
_server: WSGIServer | None = None
_port: int | None = None  # the port actually served


def prepare_directory(environ: MutableMapping[str, str] = os.environ) -> str:
    """Give this worker its PROMETHEUS_MULTIPROC_DIR (main process, before the pool forks)."""
    path = environ.get(ENV_VAR)
    if path:
        os.makedirs(path, exist_ok=True)
        # An earlier run's files would be added to this run's counters, and its dead pids'
        # live gauges would never go.
        for stale in glob.glob(os.path.join(path, "*.db")):
            os.remove(stale)
    else:
        path = tempfile.mkdtemp(prefix="tagger-metrics-")
        environ[ENV_VAR] = path
        atexit.register(_remove_directory, path, owner=os.getpid())
    _bind(path)
    return path


def _remove_directory(path: str, *, owner: int) -> None:
    if os.getpid() == owner:  # not in a forked child (they leave by os._exit, but be sure)
        shutil.rmtree(path, ignore_errors=True)


def _bind(path: str) -> None:
    global _metrics, _bound_dir
    # prometheus_client chooses in-process or per-pid file values when it is first imported
    # (from the variable). Rebinding covers a library that imported it before the variable
    # was set, and starts a fresh set of files when the directory changes.
    from prometheus_client import values

    getattr(values.ValueClass, "close_all_files", lambda: None)()  # the previous dir's files
    values.ValueClass = values.MultiProcessValue()
    _metrics, _bound_dir = None, path


def _current() -> _Metrics | None:
    global _metrics
    path = os.environ.get(ENV_VAR)
    if not path:
        return None  # not a worker that prepared a directory (embedded run, eager tests)
    if path != _bound_dir:
        _bind(path)  # a process started with the variable set (spawned, or by the user)
    if _metrics is None:
        _metrics = _Metrics()
    return _metrics


def observe_batch(outcome: BatchOutcome) -> None:
    """Record one batch: its stages, size, images tagged, failures and model."""
    m = _current()
    if m is None:
        return
    observe_failures(err.reason for err in outcome.failed.values())
    if not outcome.seconds:
        return  # split or isolated before running: no stages, no model call
    size = len(outcome.tagged) + len(outcome.failed) + len(outcome.deferred) + len(outcome.unknown)
    m.batches.labels(outcome.model_version, outcome.runtime).inc()
    m.batch_size.observe(size)
    for stage, seconds in outcome.seconds.items():
        m.stage_seconds.labels(stage).observe(seconds)
    m.images.labels(outcome.model_version).inc(len(outcome.tagged))
    wall = sum(outcome.seconds.values())
    if wall > 0:
        m.images_per_second.set(len(outcome.tagged) / wall)
    model = (outcome.model_version, outcome.runtime)
    # A shadow batch ran a candidate beside the served version: the info gauge keeps
    # saying which version the worker serves, not the last one it happened to run.
    if m.model != model and not outcome.shadow:
        if m.model is not None:
            # Files cannot forget a series: the old model's info goes to 0, not away.
            m.model_info.labels(*m.model).set(0)
        m.model_info.labels(*model).set(1)
        m.model = model


def observe_failures(reasons: Iterable[str]) -> None:
    """Count failed items by reason (also those of a batch that failed as a whole)."""
    m = _current()
    if m is not None:
        for reason in reasons:
            m.failures.labels(reason).inc()


def mark_dead(pid: int) -> None:
    """A pool process is leaving: drop its live gauges (its counters keep counting)."""
    path = os.environ.get(ENV_VAR)
    if path:
        from prometheus_client.multiprocess import mark_process_dead

        mark_process_dead(pid, path)


def _forget_dead(path: str) -> None:
    # A child killed outright (hard time limit, OOM) never ran mark_dead.
    for name in glob.glob(os.path.join(path, "gauge_live*_*.db")):
        pid = int(name.rsplit("_", 1)[1][:-3])
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            mark_dead(pid)
        except PermissionError:
            pass  # alive, someone else's


class _Collector:
    """The directory's merged values, without the processes that died unannounced."""

    def __init__(self, path: str) -> None:
        from prometheus_client.multiprocess import MultiProcessCollector

        self._path = path
        self._merged = MultiProcessCollector(None, path)

    def collect(self) -> Iterable[Any]:
        _forget_dead(self._path)
        return self._merged.collect()


def serve(port: int, *, addr: str = "0.0.0.0") -> int | None:
    """Serve ``/metrics`` on ``port`` in this (main) process; None if 0 or unusable."""
    global _server, _port
    path = os.environ.get(ENV_VAR)
    if not port or not path or _server is not None:
        if path and not port:
            log.info("metrics: recorded in %s, no endpoint (port 0)", path)
        return _port
    from prometheus_client import CollectorRegistry, start_http_server

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(path))
    try:
        _server, _ = start_http_server(port, addr=addr, registry=registry)
    except OSError as exc:
        # Several workers on one host: the first has the port. Working matters more.
        log.warning(
            "metrics: cannot serve on port %d (%s); this worker runs without a metrics "
            "endpoint: give each worker on a host its own TAGGER_METRICS_PORT",
            port,
            exc.strerror or exc,
        )
        return None
    _port = port
    log.info("metrics: serving http://%s:%d/metrics from %s", addr, port, path)
    return port


def stop() -> None:
    """Stop serving (worker shutdown)."""
    global _server, _port
    if _server is not None:
        _server.shutdown()
        _server.server_close()
    _server, _port = None, None


def summary() -> dict[str, Any]:
    """What this worker's processes recorded so far, merged (for `tagger stats`)."""
    path = os.environ.get(ENV_VAR)
    if not path or not os.path.isdir(path):
        return {"enabled": False}
    return {"enabled": True, "port": _port, **summarise(_Collector(path).collect())}


def summarise(metrics: Iterable[Any]) -> dict[str, Any]:
    """Sums and means of merged metric families (prometheus_client ``Metric``s)."""
    total: dict[str, float] = {}
    stages: dict[str, dict[str, float]] = {}
    failures: dict[str, int] = {}
    rates: dict[str, float] = {}
    models: set[tuple[str, str]] = set()
    for s in (s for metric in metrics for s in metric.samples):
        labels: Mapping[str, str] = s.labels
        if s.name.startswith("tagger_stage_seconds_") and not s.name.endswith("_bucket"):
            figures = stages.setdefault(labels["stage"], {})
            figures["seconds" if s.name.endswith("_sum") else "batches"] = s.value
        elif s.name == "tagger_item_failures_total":
            failures[labels["reason"]] = failures.get(labels["reason"], 0) + int(s.value)
        elif s.name == "tagger_batch_images_per_second":
            rates[labels["pid"]] = s.value
        elif s.name == "tagger_model_info" and s.value == 1:
            models.add((labels["model_version"], labels["runtime"]))
        else:
            total[s.name] = total.get(s.name, 0.0) + s.value
    for figures in stages.values():
        figures["batches"] = int(figures["batches"])
        figures["mean_seconds"] = figures["seconds"] / figures["batches"]
    busy = sum(figures["seconds"] for figures in stages.values())
    images = int(total.get("tagger_images_tagged_total", 0))
    sizes = total.get("tagger_batch_size_count", 0)
    return {
        "batches": int(total.get("tagger_batches_total", 0)),
        "images_tagged": images,
        "images_per_second": images / busy if busy else None,  # per process busy in batches
        "last_batch_images_per_second": rates,  # by pid
        "batch_size_mean": total["tagger_batch_size_sum"] / sizes if sizes else None,
        "stages": {k: stages[k] for k in (*STAGES, *sorted(stages)) if k in stages},
        "failures": dict(sorted(failures.items())),
        "model_versions": sorted({version for version, _ in models}),
        "runtimes": sorted({runtime for _, runtime in models}),
    }
