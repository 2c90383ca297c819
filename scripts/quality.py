"""Quality check of the trainer (not a unit test): does the model actually learn?

Draws a synthetic catalogue (>= 1,000 images), trains with `python -m train fit` on this
machine's CPU from a random backbone (`--backbone-weights none`, image-only), holds out
20%, and checks the held-out *image-only* figures against the bar: product top-1 >= 0.90
and gender accuracy >= 0.90, all within 10 minutes of wall-clock time, generation
included. Prints the figures and the time; exits 1 when the bar is missed.

    .venv/bin/python scripts/quality.py            # defaults: the run quoted in README
    .venv/bin/python scripts/quality.py --keep out/quality   # keep the data and artifact
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from train.fit import LR_SCHEDULES, FitOptions

ROOT = Path(__file__).resolve().parent.parent

# The run quoted in README. Where it departs from fit's defaults (FitOptions and
# ModelConfig, made for a pretrained backbone on full-size images) it does so on purpose:
# it learns from a random backbone within a CPU budget. Batch size, seed and validation
# share are fit's own defaults, read from FitOptions.
QUALITY_IMAGES = 1020  # the bar asks for >= 1,000
QUALITY_IMAGE_SIZE = 64  # small: the whole check has 10 minutes on a 2-core CPU
QUALITY_EPOCHS = 35  # fewer miss the bar (README: 30 epochs gave 0.8725)
QUALITY_PATIENCE = 40  # more than the epochs: no early stop, the schedule runs its course
QUALITY_LR_SCHEDULE = "cosine"  # steadier final epochs on a short run from scratch
QUALITY_LEARNING_RATE = 1.5e-3  # the cosine peak
QUALITY_BN_CALIBRATION_ITEMS = 256  # fewer than fit's default; README's figures used 256


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=QUALITY_IMAGES, help="synthetic images (>= 1000)")
    parser.add_argument("--image-size", type=int, default=QUALITY_IMAGE_SIZE)
    parser.add_argument("--epochs", type=int, default=QUALITY_EPOCHS)
    parser.add_argument("--batch-size", type=int, default=FitOptions.batch_size)
    parser.add_argument("--patience", type=int, default=QUALITY_PATIENCE)
    parser.add_argument("--learning-rate", type=float, default=QUALITY_LEARNING_RATE)
    parser.add_argument("--lr-schedule", default=QUALITY_LR_SCHEDULE, choices=LR_SCHEDULES)
    parser.add_argument("--seed", type=int, default=FitOptions.seed)
    parser.add_argument("--bn-calibration-items", type=int, default=QUALITY_BN_CALIBRATION_ITEMS)
    parser.add_argument("--limit-s", type=float, default=600.0, help="wall-clock budget")
    parser.add_argument("--min-product-top1", type=float, default=0.90)
    parser.add_argument("--min-gender-accuracy", type=float, default=0.90)
    parser.add_argument("--keep", type=Path, help="keep data and artifact in this folder")
    args = parser.parse_args()
    if args.n < 1000:
        parser.error("--n must be at least 1000")

    work = args.keep or Path(tempfile.mkdtemp(prefix="tagger-quality-"))
    if args.keep and work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    python = sys.executable
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    started = time.monotonic()
    try:
        subprocess.run(
            [python, "-m", "train", "synthetic", "--out", str(work / "data"),
             "--n", str(args.n), "--seed", str(args.seed), "--image-size", str(args.image_size)],
            check=True, cwd=ROOT, env=env,
        )  # fmt: skip
        subprocess.run(
            [python, "-m", "train", "fit", "--data", str(work / "data" / "labels_front.csv"),
             "--out", str(work / "model"), "--backbone-weights", "none", "--no-text",
             "--image-size", str(args.image_size), "--epochs", str(args.epochs),
             "--batch-size", str(args.batch_size), "--patience", str(args.patience),
             "--val-split", str(FitOptions.val_split), "--seed", str(args.seed),
             "--lr-schedule", args.lr_schedule,
             "--learning-rate", str(args.learning_rate), "--name", "quality",
             "--bn-calibration-items", str(args.bn_calibration_items)],
            check=True, cwd=ROOT, env=env,
        )  # fmt: skip
        seconds = time.monotonic() - started
        metrics = json.loads((work / "model" / "metrics.json").read_text())
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)

    product, gender = metrics["product_top1"], metrics["gender_accuracy"]
    checks = [
        (f"product top-1 (image only) {product:.4f} >= {args.min_product_top1}",
         product >= args.min_product_top1),
        (f"gender accuracy (image only) {gender:.4f} >= {args.min_gender_accuracy}",
         gender >= args.min_gender_accuracy),
        (f"wall-clock {seconds:.0f}s <= {args.limit_s:.0f}s", seconds <= args.limit_s),
    ]  # fmt: skip
    cpus = os.cpu_count()
    print(
        f"\nquality: {args.n} synthetic images at {args.image_size}px, "
        f"{metrics['training']['train_items']} train / {metrics['items']} held out, "
        f"--backbone-weights none, image only, {cpus} CPUs, "
        f"{metrics['training']['epochs_run']} epochs (best {metrics['training']['best_epoch']})"
    )
    print(
        f"held out: product top-1 {product:.4f}, gender accuracy {gender:.4f}, "
        f"gender binary accuracy {metrics['gender_binary_accuracy']:.4f}, "
        f"product AUC {metrics['product_auc']:.4f}, product macro F1 "
        f"{metrics['product_macro_f1']:.4f}, val loss {metrics['val_loss']:.4f}; "
        f"total {seconds:.0f}s"
    )
    for text, ok in checks:
        print(f"  {'PASS' if ok else 'FAIL'}  {text}")
    return 0 if all(ok for _, ok in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
