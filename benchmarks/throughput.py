"""Throughput benchmark: the model's own limit vs. the real pipeline, side by side in one run.

    .venv/bin/python benchmarks/throughput.py [--images 256] [--image-size 224]

Measures, in this process and in this order:
1. model limit: images/s of one ``predict_on_batch`` call on a preloaded batch, per batch
   size (the best is the ceiling for everything else);
2. naive: ``model.predict`` on one image at a time (the per-image baseline);
3. end to end, S3 (moto server over HTTP) → decode → model → Postgres, with the worker's
   own ``BatchTagger``: one item per batch (a one-image-per-task worker), and batches of
   ``--batch-size``; then two threads sharing one model (``tagger worker --pool threads
   -c 2``), so one batch's fetch and decode overlap the other's model call.
Ratios are against the model limit measured here, so a noisy shared machine cancels out.
Needs Postgres and Redis-free: Postgres on 127.0.0.1 (as for the tests).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")

import boto3
import numpy as np

from tagger.artifacts import save_artifact
from tagger.catalogue import CatalogueItem
from tagger.db import make_engine, make_session_factory, truncate_all, upgrade
from tagger.importer import import_items
from tagger.model import load_model
from tagger.pipeline import BatchTagger
from tagger.registry import register_artifact
from tagger.settings import Settings
from tests.factories import jpeg_bytes
from tests.services import moto_server, postgres_database
from train.model import GENDER_LABELS, PRODUCT_LABELS, ModelConfig, build_model


def rate(n: int, seconds: float) -> float:
    return n / seconds if seconds > 0 else float("inf")


def model_limit(model, size: int, batch_sizes: list[int], n: int) -> dict[int, float]:
    out = {}
    for bs in batch_sizes:
        batch = {
            "image": np.random.default_rng(0).uniform(0, 255, (bs, size, size, 3)).astype("f4"),
            "caption": np.array([["a red dress"]] * bs),
        }
        model.keras_model.predict_on_batch(batch)  # warm-up (graph tracing)
        calls = max(2, n // bs)
        start = time.perf_counter()
        for _ in range(calls):
            model.keras_model.predict_on_batch(batch)
        out[bs] = rate(calls * bs, time.perf_counter() - start)
    return out


def naive_predict(model, size: int, n: int) -> float:
    import tensorflow as tf

    # model.predict's data adapter rejects numpy string arrays; a tf string tensor is fine.
    one = {"image": np.zeros((1, size, size, 3), "f4"), "caption": tf.constant([["a dress"]])}
    model.keras_model.predict(one, verbose=0)
    start = time.perf_counter()
    for _ in range(n):
        model.keras_model.predict(one, verbose=0)
    return rate(n, time.perf_counter() - start)


def end_to_end(settings, sessions, items, *, batch_size: int, threads: int) -> float:
    with sessions.begin() as s:
        plan = import_items(session=s, items=items, source="bench", batch_size=batch_size)
    tagger = BatchTagger(settings, sessions)
    tagger.run(None, [items[0].item_id])  # load the model outside the timing
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=threads) as pool:
        list(pool.map(lambda b: tagger.run(plan.job.id, b), plan.batches))
    return rate(len(items), time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--images", type=int, default=256)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--naive-images", type=int, default=32)
    args = p.parse_args()
    size = args.image_size

    work = Path(tempfile.mkdtemp(prefix="tagger-bench-"))
    config = ModelConfig(image_size=size, backbone_weights=None)
    keras_model = build_model(config, gender_labels=GENDER_LABELS, product_labels=PRODUCT_LABELS)
    artifact = save_artifact(
        keras_model,
        work / "model",
        config=config,
        gender_labels=GENDER_LABELS,
        product_labels=PRODUCT_LABELS,
    )
    model = load_model(artifact, version="bench")

    print(f"tagger throughput benchmark: EfficientNetB0 at {size}x{size}, {os.cpu_count()} CPUs")
    limits = model_limit(model, size, [1, 8, 16, 32, 64], n=args.images)
    best_bs, best = max(limits.items(), key=lambda kv: kv[1])
    for bs, r in limits.items():
        print(f"  model limit, batch {bs:3d}: {r:8.1f} images/s")
    print(f"  model limit (best, batch {best_bs}): {best:.1f} images/s")
    naive = naive_predict(model, size, args.naive_images)
    print(f"  model.predict one image at a time: {naive:8.1f} images/s  ({naive / best:.2f}x)")

    with moto_server() as endpoint, postgres_database() as url:
        upgrade(url)
        settings = Settings(
            database_url=url,
            s3_endpoint_url=endpoint,
            fetch_concurrency=16,
            model_cache_dir=work / "cache",
        )
        s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
        s3.create_bucket(Bucket="bench")
        items = []
        for i in range(args.images):
            # Catalogue-sized photos (600x800 JPEG), so decoding costs what it costs in life.
            s3.put_object(Bucket="bench", Key=f"{i}.jpg", Body=jpeg_bytes(i, (600, 800)))
            items.append(
                CatalogueItem(
                    item_id=f"sku{i}", image_uri=f"s3://bench/{i}.jpg", title="a red dress"
                )
            )
        engine = make_engine(url)
        sessions = make_session_factory(engine)
        runs = [
            ("one image per task", 1, 1, args.naive_images),
            (f"batches of {args.batch_size}", args.batch_size, 1, args.images),
            (f"batches of {args.batch_size}, 2 threads", args.batch_size, 2, args.images),
        ]
        for label, batch_size, threads, n in runs:
            truncate_all(engine)
            with sessions.begin() as s:
                register_artifact(
                    session=s, settings=settings, uri=str(artifact), version="bench", activate=True
                )
            r = end_to_end(settings, sessions, items[:n], batch_size=batch_size, threads=threads)
            print(f"  end to end, {label:28s}: {r:8.1f} images/s  ({r / best:.2f}x model limit)")
        engine.dispose()


if __name__ == "__main__":
    main()
