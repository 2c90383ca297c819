"""Pipeline benchmark: each stage alone, the pipeline limit they imply, and real workers.

    .venv/bin/python benchmarks/pipeline.py [--images 512] [--held-out 256]
    .venv/bin/python benchmarks/pipeline.py --model-only --runtimes keras   # a GPU host

Everything in one run, so the ratios hold on a shared, noisy machine:
1. two models trained briefly at 224 px on synthetic items (image+text and image-only;
   a seeded, frozen random backbone: no ImageNet download here), converted for OpenVINO
   exactly as a worker converts them (tagger.runtime, the check included);
2. the model stage alone for each runtime and precision: images/s of one call on a batch
   of --batch-size, interleaved round by round, load time, and top-class agreement with
   Keras fp32 on --held-out synthetic items the models never saw;
3. (unless --model-only) each other stage alone on the whole machine, with the worker's
   own code and settings: fetch from moto's S3 server over HTTP, decode 800x600 JPEGs,
   write tags to Postgres; the pipeline limit 1 / sum(1 / rate) for each runtime;
4. end to end through real `tagger worker` processes started as the README starts them
   (Redis db --redis-db, Postgres and moto as for the tests), the image+text model, a
   warm-up job then a timed one: images/s, ratio to the pipeline limit, and the peak RSS
   of the process that ran the model.
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")

import numpy as np

from benchmarks.e2e import run_workers
from tagger.runtime import choose_precision, cpu_flags, ensure_converted, gpu_visible
from tagger.settings import Settings, available_cores


def train_models(work: Path, size: int, n_train: int, seed: int) -> dict[str, Path]:
    from train.data import read_labelled
    from train.fit import FitOptions, fit
    from train.model import ModelConfig
    from train.synthetic import generate

    data = read_labelled(
        generate(work / "train", n=n_train, seed=seed, image_size=size) / "labels_front.csv"
    )
    out = {}
    for name, use_text in (("image+text", True), ("image-only", False)):
        if (work / name / "model.keras").is_file():
            print(f"  reusing the {name} model in {work / name}")
            out[name] = work / name
            continue
        config = ModelConfig(image_size=size, use_text=use_text, backbone_weights=None)
        options = FitOptions(epochs=3, seed=seed, bn_calibration_items=0, learning_rate=3e-3)
        started = time.perf_counter()
        fit(data, work / name, config, options, log=lambda _: None)
        print(f"  trained {name} model in {time.perf_counter() - started:.0f} s", flush=True)
        out[name] = work / name
    return out


def held_out(work: Path, size: int, n: int, seed: int) -> tuple[np.ndarray, list[str]]:
    from PIL import Image

    from train.data import read_labelled
    from train.synthetic import generate

    data = read_labelled(
        generate(work / "held-out", n=n, seed=seed + 1, image_size=size) / "labels_front.csv"
    )
    images = np.stack([np.asarray(Image.open(e.image).convert("RGB")) for e in data.examples])
    return images, [e.caption for e in data.examples]


def load_runtimes(path: Path, runtimes: list[str], cache: Path, threads: int) -> dict:
    """{label: (loaded model, seconds to load)}; Keras fp32 first (the reference)."""
    from tagger.artifacts import read_artifact_info
    from tagger.model import load_model

    models = {}
    if "keras" in runtimes:
        started = time.perf_counter()
        models["keras fp32"] = (load_model(path, version="b"), time.perf_counter() - started)
    if "openvino" in runtimes:
        from tagger.openvino_model import load_openvino

        native_bf16 = choose_precision("auto", flags=cpu_flags()) == "bf16"
        precisions = ["fp32"] + (["bf16"] if native_bf16 else [])
        for precision in precisions:
            folder = ensure_converted(path, cache_dir=cache, precision=precision)
            started = time.perf_counter()
            model = load_openvino(
                folder,
                info=read_artifact_info(path),
                version="b",
                precision=precision,
                threads=threads,
            )
            models[f"openvino {precision}"] = (model, time.perf_counter() - started)
    return models


def model_stage(models: dict, images, captions, *, batch: int, rounds: int) -> dict[str, float]:
    """Median images/s of one call on ``batch`` items, runtimes interleaved per round."""
    x, caps = images[:batch], captions[:batch]
    for model, _ in models.values():
        model.predict(x, caps)  # warm-up: traces, allocations
    times: dict[str, list[float]] = {label: [] for label in models}
    for _ in range(rounds):
        for label, (model, _) in models.items():
            started = time.perf_counter()
            model.predict(x, caps)
            times[label].append(time.perf_counter() - started)
    return {label: batch / statistics.median(t) for label, t in times.items()}


def agreement(models: dict, images, captions) -> dict[str, dict[str, float]]:
    """Share of held-out items whose top class (strict argmax) equals Keras fp32's."""
    preds = {}
    for label, (model, _) in models.items():
        preds[label] = [
            p
            for i in range(0, len(images), 64)
            for p in model.predict(images[i : i + 64], captions[i : i + 64])
        ]
    ref = preds["keras fp32"]
    return {
        label: {
            "gender": float(np.mean([a.gender == b.gender for a, b in zip(ps, ref, strict=True)])),
            "product": float(
                np.mean([a.product_type == b.product_type for a, b in zip(ps, ref, strict=True)])
            ),
        }
        for label, ps in preds.items()
    }


def catalogue_jpegs(work: Path, n: int, seed: int) -> list[tuple[bytes, str]]:
    """Catalogue-sized photos: synthetic items rendered at 600 px, as 800x600 JPEGs."""
    from PIL import Image

    from train.data import read_labelled
    from train.synthetic import generate

    data = read_labelled(
        generate(work / "catalogue", n=n, seed=seed + 2, image_size=600) / "labels_front.csv"
    )
    out = []
    for e in data.examples:
        canvas = Image.new("RGB", (600, 800), "white")
        canvas.paste(Image.open(e.image).convert("RGB"), (0, 100))
        buf = io.BytesIO()
        canvas.save(buf, format="JPEG", quality=90)
        out.append((buf.getvalue(), e.caption))
    return out


def other_stages(settings: Settings, db_url: str, jpegs, *, batch: int, size: int):
    """images/s of fetch, decode and write alone, each with the worker's own code."""
    from tagger.catalogue import CatalogueItem
    from tagger.db import make_engine, make_session_factory
    from tagger.images import decode_many
    from tagger.importer import import_items
    from tagger.registry import register_model_version
    from tagger.scoring import to_predictions
    from tagger.storage import fetch_many, make_s3_client
    from tagger.tags import save_batch
    from train.model import GENDER_LABELS, PRODUCT_LABELS

    uris = [f"s3://bench/{i}.jpg" for i in range(len(jpegs))]
    batches = [uris[i : i + batch] for i in range(0, len(uris), batch)]
    client = make_s3_client(settings)
    fetch_many(uris[:4], s3_client=client, concurrency=4, max_bytes=settings.max_image_bytes)
    started = time.perf_counter()
    blobs = {}
    for b in batches:
        blobs.update(
            fetch_many(
                b,
                s3_client=client,
                concurrency=settings.fetch_concurrency,
                max_bytes=settings.max_image_bytes,
            )
        )
    fetch = len(uris) / (time.perf_counter() - started)
    assert all(isinstance(v, bytes) for v in blobs.values()), "a fetch failed"

    started = time.perf_counter()
    for b in batches:
        decode_many(
            {u: blobs[u] for u in b},
            size=size,
            max_pixels=settings.max_image_pixels,
            workers=settings.decode_workers,
        )
    decode = len(uris) / (time.perf_counter() - started)

    engine = make_engine(db_url)
    sessions = make_session_factory(engine)
    items = [
        CatalogueItem(item_id=f"w{i}", image_uri=u, title=jpegs[i][1]) for i, u in enumerate(uris)
    ]
    with sessions.begin() as s:
        # import needs an active version; run_workers registers and activates the real one
        register_model_version(
            session=s,
            version="bench-write",
            artifact_uri="/none",
            gender_labels=GENDER_LABELS,
            product_labels=PRODUCT_LABELS,
            image_size=size,
            uses_text=True,
            activate=True,
        )
        import_items(session=s, items=items, source="bench", batch_size=batch)
    rng = np.random.default_rng(0)
    preds = to_predictions(
        rng.random((len(items), 2)),
        rng.random((len(items), 17)),
        gender_labels=GENDER_LABELS,
        product_labels=PRODUCT_LABELS,
    )
    by_id = {it.item_id: p for it, p in zip(items, preds, strict=True)}
    ids = list(by_id)
    started = time.perf_counter()
    for i in range(0, len(ids), batch):
        with sessions.begin() as s:
            chunk = {item_id: by_id[item_id] for item_id in ids[i : i + batch]}
            save_batch(
                session=s, job_id=None, model_version="bench-write", predictions=chunk, failures={}
            )
    write = len(items) / (time.perf_counter() - started)
    engine.dispose()
    return {"fetch": fetch, "decode": decode, "write": write}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--images", type=int, default=512, help="catalogue images (stages, e2e)")
    p.add_argument("--held-out", type=int, default=256)
    p.add_argument("--train", type=int, default=340, help="synthetic training items")
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--rounds", type=int, default=7, help="model-stage rounds (median)")
    p.add_argument("--runtimes", default="keras,openvino")
    p.add_argument("--model-only", action="store_true", help="skip S3, Postgres and workers")
    p.add_argument("--redis-db", type=int, default=15)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--work", type=Path, help="working folder; trained models in it are reused")
    args = p.parse_args()
    runtimes = args.runtimes.split(",")
    work = args.work or Path(tempfile.mkdtemp(prefix="tagger-pipeline-"))
    work.mkdir(parents=True, exist_ok=True)
    cores = available_cores()
    flags = cpu_flags()
    cpu = next(
        (
            ln.split(":", 1)[1].strip()
            for ln in Path("/proc/cpuinfo").read_text().splitlines()
            if ln.startswith("model name")
        ),
        platform.processor(),
    )
    simd = " ".join(sorted(flags & {"avx2", "avx512f", "avx512_bf16", "amx_bf16", "avx512_vnni"}))
    print(f"machine: {cpu}, {cores} cores ({simd}), GPU visible: {gpu_visible()}", flush=True)

    paths = train_models(work, args.image_size, args.train, args.seed)
    images, captions = held_out(work, args.image_size, args.held_out, args.seed)
    model_rates: dict[str, dict[str, float]] = {}
    for name, path in paths.items():
        models = load_runtimes(path, runtimes, work / "cache", threads=0)
        caps = captions if name == "image+text" else [None] * len(captions)
        rates = model_stage(models, images, caps, batch=args.batch_size, rounds=args.rounds)
        agree = agreement(models, images, caps) if "keras fp32" in models else {}
        model_rates[name] = rates
        print(f"\nmodel stage alone, {name} model, batch {args.batch_size}, {args.image_size} px:")
        base = rates.get("keras fp32")
        for label, rate in rates.items():
            ratio = f"{rate / base:5.2f}x Keras fp32" if base else ""
            a = agree.get(label)
            agreed = (
                (
                    f"agreement gender {a['gender']:.1%} product {a['product']:.1%} "
                    f"on {len(images)} held-out"
                )
                if a
                else ""
            )
            print(
                f"  {label:14s} {rate:7.1f} images/s {ratio}  load {models[label][1]:5.2f} s  "
                f"{agreed}"
            )
        del models
    if args.model_only:
        return
    run_e2e(args, work, model_rates["image+text"], paths["image+text"])


def run_e2e(args, work: Path, model_rates: dict[str, float], artifact: Path) -> None:
    import boto3

    from tests.services import moto_server, postgres_database

    jpegs = catalogue_jpegs(work, args.images, args.seed)
    with moto_server() as s3_url, postgres_database() as db_url:
        from tagger.db import upgrade

        upgrade(db_url)
        s3 = boto3.client("s3", endpoint_url=s3_url, region_name="us-east-1")
        s3.create_bucket(Bucket="bench")
        for i, (blob, _) in enumerate(jpegs):
            s3.put_object(Bucket="bench", Key=f"{i}.jpg", Body=blob)
        settings = Settings(database_url=db_url, s3_endpoint_url=s3_url)
        stages = other_stages(settings, db_url, jpegs, batch=args.batch_size, size=args.image_size)
        print(
            f"\nother stages alone ({args.images} catalogue JPEGs, 800x600, batches of "
            f"{args.batch_size}, worker defaults):"
        )
        for stage, rate in stages.items():
            print(f"  {stage:7s} {rate:8.1f} images/s")
        limits = {}
        for label, rate in model_rates.items():
            limits[label] = 1 / sum(1 / r for r in (*stages.values(), rate))
            print(f"  pipeline limit with {label:14s}: {limits[label]:7.1f} images/s")
        run_workers(args, work, artifact, s3_url, db_url, jpegs, limits)


if __name__ == "__main__":
    main()
