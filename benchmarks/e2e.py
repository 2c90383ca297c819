"""End to end through real `tagger worker` processes, for benchmarks/pipeline.py.

Each configuration starts `python -m tagger.cli worker` (the README's `tagger worker`)
with the default settings plus the configuration's own, runs a warm-up job (model load,
conversion cache, first calls), then times a job of every catalogue image from the
moment it is queued (the job row's creation) until its last batch is written (the job's
finish time), both stamped in Postgres. Each job has its own item ids,
so every configuration tags every image.
"""

from __future__ import annotations

import os
import re
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import redis
import sqlalchemy as sa

from tagger.db import Job
from tagger.runtime import choose_precision, choose_runtime, cpu_flags, gpu_visible

#: (label, extra environment, extra worker options); the first is the reference.
CONFIGS: list[tuple[str, dict[str, str], list[str]]] = [
    ("keras, before (prefork, 1 process)", {"TAGGER_RUNTIME": "keras"}, []),
    ("defaults", {}, []),
    ("openvino, prefork 1 process", {"TAGGER_WORKER_CONCURRENCY": "1"}, []),
    ("openvino, --pool threads -c 2", {}, ["--pool", "threads", "--concurrency", "2"]),
]


#: The only TAGGER_* variables the benchmark sets; any other in its environment is dropped.
TAGGER_ENV = {
    "TAGGER_DATABASE_URL",
    "TAGGER_BROKER_URL",
    "TAGGER_S3_ENDPOINT_URL",
    "TAGGER_MODEL_CACHE_DIR",
    "TAGGER_BATCH_SIZE",
    "TAGGER_METRICS_PORT",
}


def runtime_label(env: dict[str, str]) -> str:
    """The runtime and precision a worker started with ``env`` resolves to."""
    runtime = choose_runtime(env.get("TAGGER_RUNTIME", "auto"), gpu=gpu_visible())
    if runtime == "keras":
        return "keras fp32"
    return f"openvino {choose_precision(env.get('TAGGER_PRECISION', 'auto'), flags=cpu_flags())}"


def tagger(env: dict[str, str], *args: str) -> str:
    run = subprocess.run(
        [sys.executable, "-m", "tagger.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if run.returncode:
        raise SystemExit(f"tagger {' '.join(args)} failed: {run.stderr[-2000:]}")
    return run.stdout.strip()


def process_tree(pid: int) -> list[int]:
    children = Path(f"/proc/{pid}/task/{pid}/children")
    kids = [int(c) for c in children.read_text().split()] if children.exists() else []
    return [pid, *[p for k in kids for p in process_tree(k)]]


def peak_rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1)) / 1024


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds the processes have used (Linux /proc)."""
    total = 0
    for pid in pids:
        # Fields after the command name, which may hold spaces: utime and stime are the
        # 12th and 13th of them.
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def machine_busy_seconds() -> float:
    """CPU seconds every process on the machine has used, summed over cores (/proc/stat)."""
    user, nice, system, _idle, _iowait, irq, softirq, steal = (
        int(v) for v in Path("/proc/stat").read_text().split("\n")[0].split()[1:9]
    )
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def wait_finished(engine: sa.Engine, job_id: int, worker: subprocess.Popen) -> float:
    """Seconds from the job's creation (its batches queued) to its last batch written."""
    while True:
        with engine.connect() as conn:
            row = conn.execute(sa.select(Job.__table__).where(Job.id == job_id)).one()
        if row.status == "finished":
            if row.failed:
                raise SystemExit(f"job {job_id}: {row.failed} items failed")
            return (row.finished_at - row.created_at).total_seconds()
        if worker.poll() is not None:
            raise SystemExit("the worker exited; see its log")
        time.sleep(0.05)


def write_csv(path: Path, prefix: str, jpegs, n: int) -> Path:
    import csv

    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["item_id", "image_uri", "title"])
        for i in range(n):
            w.writerow([f"{prefix}{i}", f"s3://bench/{i}.jpg", jpegs[i][1]])
    return path


def run_workers(args, work: Path, artifact: Path, s3_url: str, db_url: str, jpegs, limits):
    broker = f"redis://127.0.0.1:6379/{args.redis_db}"
    redis.Redis.from_url(broker).flushdb()
    base = {
        **os.environ,
        "TAGGER_DATABASE_URL": db_url,
        "TAGGER_BROKER_URL": broker,
        "TAGGER_S3_ENDPOINT_URL": s3_url,
        "TAGGER_MODEL_CACHE_DIR": str(work / "cache"),
        "TAGGER_BATCH_SIZE": str(args.batch_size),
        "TAGGER_METRICS_PORT": "0",
    }
    for var in [v for v in base if v.startswith("TAGGER_") and v not in TAGGER_ENV]:
        del base[var]  # the defaults are what is measured
    # --force: an earlier stage registered and activated its own version (no comparison).
    tagger(base, "model", "register", str(artifact), "--version", "bench", "--activate", "--force")
    engine = sa.create_engine(db_url)
    n = len(jpegs)
    results = []
    for k, (label, extra_env, options) in enumerate(CONFIGS):
        env = {**base, **extra_env}
        log = work / f"worker-{k}.log"
        worker = subprocess.Popen(
            [sys.executable, "-m", "tagger.cli", "worker", "-n", f"bench{k}@%h", *options],
            env=env,
            stdout=log.open("w"),
            stderr=subprocess.STDOUT,
        )
        try:
            # Two batches, so that each of two pool processes loads its model before the
            # timed job (a process loads it on its first batch).
            warm_csv = write_csv(work / "w.csv", f"w{k}-", jpegs, 2 * args.batch_size)
            warm = int(tagger(env, "import", str(warm_csv)))
            wait_finished(engine, warm, worker)
            loads = log.read_text().count("loaded model")
            csv_path = write_csv(work / "t.csv", f"t{k}-", jpegs, n)
            busy0, own0 = machine_busy_seconds(), cpu_seconds(process_tree(worker.pid))
            kids0 = resource.getrusage(resource.RUSAGE_CHILDREN)
            job = int(tagger(env, "import", str(csv_path)))
            kids = resource.getrusage(resource.RUSAGE_CHILDREN)
            importer = kids.ru_utime + kids.ru_stime - kids0.ru_utime - kids0.ru_stime
            # Timed in Postgres, not around `tagger import`: the CLI's own start-up is not
            # tagging time.
            rate = n / wait_finished(engine, job, worker)
            own = cpu_seconds(process_tree(worker.pid)) - own0
            # Where the machine's CPU went while the job ran: the worker's processes, and
            # everything else but `tagger import` (moto's S3 server, Postgres, Redis).
            rest = machine_busy_seconds() - busy0 - own - importer
            cpu = (1000 * own / n, 1000 * rest / n)
            if log.read_text().count("loaded model") != loads:
                print(f"  note: {label}: a model was loaded during the timed job", flush=True)
            peaks = [peak_rss_mb(p) for p in process_tree(worker.pid)]
            rss = (max(peaks), sum(peaks))
        finally:
            worker.send_signal(signal.SIGTERM)
            worker.wait(timeout=120)
        results.append((label, runtime_label(env), rate, rss, cpu))
        print(f"  ran {label}: {rate:.1f} images/s", flush=True)
    engine.dispose()
    redis.Redis.from_url(broker).flushdb()

    before = results[0][2]
    print(
        f"\nend to end, real `tagger worker` processes, {n} catalogue JPEGs (800x600), "
        f"image+text model, batches of {args.batch_size}:"
    )
    for label, runtime, rate, rss, _ in results:
        limit = limits.get(runtime)
        of_limit = f"{rate / limit:5.2f}x its pipeline limit" if limit else ""
        print(
            f"  {label:38s} [{runtime:13s}] {rate:7.1f} images/s  {of_limit}  "
            f"{rate / before:5.2f}x before  peak RSS {rss[0]:5.0f} MB per process, "
            f"{rss[1]:5.0f} MB all"
        )
    print("\nCPU time per image while the timed job ran (both cores; ms):")
    for label, runtime, _, _, (own, rest) in results:
        print(
            f"  {label:38s} [{runtime:13s}] worker {own:5.1f}  everything else (moto S3, "
            f"Postgres, Redis) {rest:5.1f}  total {own + rest:5.1f}  "
            f"(2 cores allow {2000 / (own + rest):5.1f} images/s)"
        )
