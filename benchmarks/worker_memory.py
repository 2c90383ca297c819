"""Worker memory benchmark: peak RSS of a real `tagger worker` pool process on one batch
of 64 maximum-size images, beside the same worker on a batch of 64 small JPEGs.

    .venv/bin/python benchmarks/worker_memory.py [--images 64] [--side 6300]

Everything is real: moto's S3 server over HTTP holds the images, Postgres (127.0.0.1, as
for the tests) the catalogue and tags, Redis (127.0.0.1:6379, db 15) the queue, and the
worker is `python -m tagger.cli worker` as the README starts it (default settings).
The images are the kinds of benchmarks/decode_memory.py (RGB, RGBA, palette with
transparency, 16-bit grey PNGs and a JPEG, 6300x6300 = 39.7 MP, just under the default
limit), each uploaded under 64 / 5 keys. Peak RSS is the pool process's VmHWM, read from
/proc after each job; the small-JPEG job runs first, so the difference is what the big
batch adds on top of TensorFlow and the model.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")

import boto3
import redis
import sqlalchemy as sa

from benchmarks.decode_memory import KINDS, make_image
from tagger.db import Job
from tests.factories import build_artifact, jpeg_bytes, write_csv
from tests.services import moto_server, postgres_database

REDIS_DB = 15


def child_pids(pid: int) -> list[int]:
    out = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                stat = (proc / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(proc.name))
    return out


def vm(pid: int, field: str) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(rf"{field}:\s+(\d+) kB", status).group(1)) / 1024


def tagger(env, *args) -> str:
    run = subprocess.run(
        [sys.executable, "-m", "tagger.cli", *args], env=env, capture_output=True, text=True
    )
    if run.returncode:
        raise SystemExit(f"tagger {' '.join(args)} failed: {run.stderr}")
    return run.stdout.strip()


def wait(engine, job_id: int, timeout: float = 1800) -> Job:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with engine.connect() as conn:
            row = conn.execute(sa.select(Job.__table__).where(Job.id == job_id)).one()
        if row.status == "finished":
            return row
        time.sleep(0.5)
    raise SystemExit(f"job {job_id} did not finish")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--images", type=int, default=64)
    p.add_argument("--side", type=int, default=6300)
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="worker-memory-"))
    redis.Redis(db=REDIS_DB).flushdb()
    with postgres_database() as db_url, moto_server() as s3_url:
        env = {
            **os.environ,
            "TAGGER_DATABASE_URL": db_url,
            "TAGGER_BROKER_URL": f"redis://127.0.0.1:6379/{REDIS_DB}",
            "TAGGER_S3_ENDPOINT_URL": s3_url,
            "TAGGER_MODEL_CACHE_DIR": str(work / "cache"),
            "TAGGER_BATCH_SIZE": str(args.images),
        }
        s3 = boto3.client("s3", endpoint_url=s3_url, region_name="us-east-1")
        s3.create_bucket(Bucket="bench")
        print(f"making {len(KINDS)} images of {args.side}x{args.side} ...", flush=True)
        blobs = {kind: make_image(kind, args.side) for kind in KINDS}
        small, big = [], []
        for i in range(args.images):
            kind = KINDS[i % len(KINDS)]
            s3.put_object(Bucket="bench", Key=f"big/{i}", Body=blobs[kind])
            s3.put_object(Bucket="bench", Key=f"small/{i}", Body=jpeg_bytes(i, (800, 600)))
            big.append({"item_id": f"big-{i}", "image_uri": f"s3://bench/big/{i}"})
            small.append({"item_id": f"small-{i}", "image_uri": f"s3://bench/small/{i}"})
        artifact = build_artifact(work / "model", image_size=224)
        tagger(env, "db", "upgrade")
        tagger(env, "model", "register", str(artifact), "--activate", "--force")
        engine = sa.create_engine(db_url)
        log = (work / "worker.log").open("w")
        worker = subprocess.Popen(
            [sys.executable, "-m", "tagger.cli", "worker", "-n", "mem@%h", "--without-gossip",
             "--without-mingle", "--without-heartbeat"],
            env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            figures = {}
            for name, rows in (("64 small JPEGs (800x600)", small), ("64 max-size images", big)):
                job = int(tagger(env, "import", str(write_csv(work / f"{name[:5]}.csv", rows))))
                row = wait(engine, job)
                # The pool process that ran the batch is the one with the highest peak
                # (the default on OpenVINO has two).
                pool = max(child_pids(worker.pid), key=lambda pid: vm(pid, "VmHWM"))
                figures[name] = (vm(pool, "VmHWM"), vm(pool, "VmRSS"), row)
        finally:
            worker.terminate()
            worker.wait(timeout=60)
            engine.dispose()
        print(f"worker pool process, batch of {args.images} (one model call):")
        for name, (hwm, rss, row) in figures.items():
            print(
                f"  after {name:26s}: peak RSS {hwm:7.0f} MB, now {rss:7.0f} MB "
                f"(job: {row.done} tagged, {row.failed} failed)"
            )
        (_, (hwm_small, *_)), (_, (hwm_big, *_)) = figures.items()
        print(f"  the max-size batch added {hwm_big - hwm_small:.0f} MB to the peak")
    redis.Redis(db=REDIS_DB).flushdb()


if __name__ == "__main__":
    main()
