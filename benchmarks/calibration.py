"""Calibration benchmark: does calibrating on the validation split help on unseen items?

    .venv/bin/python benchmarks/calibration.py [--n 1020] [--held-out 680] [--epochs 12]
        [--models text,image] [--seed 42]

Draws a synthetic catalogue (``train.synthetic``) and trains small models on it with
``train.fit.fit`` (a random backbone on small images, so it runs on a CPU in minutes):
one reading captions and one image-only, by default. Each model's calibration is the one
fit fitted on its validation split (the guarded softmax temperature of
``tagger.calibration_fit``: a text model's with captions, and again with them blanked,
for items without a title). Then each head's expected calibration error (top class, 15
bins) is measured on a second synthetic catalogue drawn with another seed that the
models have never seen, per input mode: raw; the sigmoid temperature, the softmax
temperature fitted against 0/1 targets (fit's method before the guard) and against the
smoothed targets, each always applied; and fit's (``guarded``). ``overall`` is one ECE
over every held-out prediction of every head, mode and model pooled.

It also reads each model's review thresholds (review.json) on the held-out items: the
share of tags needing review, and how often the others are right (the target is 95%).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np

from tagger.calibration import SIGMOID_TEMPERATURE, Calibration, expected_calibration_error
from tagger.reliability import reliability_of
from tagger.review import GENDER, PRODUCT, ReviewThresholds, head_needs_review
from train.calibrate import calibrate
from train.data import encode, read_labelled, split
from train.evaluate import IMAGE_TEXT, predict_modes
from train.fit import FitOptions, fit
from train.model import ModelConfig
from train.synthetic import generate

#: the held-out catalogue's seed is the training one plus this: other items, same recipe
HELD_OUT_SEED_OFFSET = 1000
RAW, GUARDED = "raw", "guarded"
#: the columns: how each calibration is fitted on the validation split (calibrate's
#: keywords); fit's own, the guarded one, is last
UNGUARDED = {
    "sigmoid T": dict(method=SIGMOID_TEMPERATURE, guard=False),
    "softmax T, 0/1": dict(guard=False, smoothed=False),
    "softmax T": dict(guard=False),
}
COLUMNS = (RAW, *UNGUARDED, GUARDED)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1020, help="items to train and validate on")
    parser.add_argument("--held-out", type=int, default=680, help="unseen items to measure on")
    parser.add_argument("--image-size", type=int, default=48)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--seed", type=int, default=FitOptions.seed)
    parser.add_argument("--models", default="text,image", help="text, image or both")
    parser.add_argument("--keep", type=Path, help="keep the data and artifacts in this folder")
    args = parser.parse_args()
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    if not models or set(models) - {"text", "image"}:
        parser.error("--models: text, image or text,image")

    started = time.monotonic()
    work = args.keep or Path(tempfile.mkdtemp(prefix="tagger-calibration-"))
    try:
        data = read_labelled(
            generate(work / "train", n=args.n, seed=args.seed, image_size=args.image_size)
            / "labels_front.csv"
        )
        held_seed = args.seed + HELD_OUT_SEED_OFFSET
        held = read_labelled(
            generate(work / "held", n=args.held_out, seed=held_seed, image_size=args.image_size)
            / "labels_front.csv"
        )
        rows, notes = [], []
        for model in models:
            found, note = _measure(model, data, held, args, work)
            rows += found
            notes.append(note)
        _, val = split(data, val_split=FitOptions.val_split, seed=args.seed)
        _print(rows, notes, args, len(data.examples) - len(val), held_seed, len(held.examples))
        print(f"({time.monotonic() - started:.0f}s)")
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    return 0


def _measure(model: str, data, held, args, work: Path) -> tuple[list[dict], str]:
    """Train one model; per head and input mode, its held-out figures."""
    config = ModelConfig(
        image_size=args.image_size,
        use_text=model == "text",
        backbone_weights=None,
        train_backbone=True,  # a random backbone must learn (train.cli does the same)
    )
    # No early stop, so the run is the planned length; cosine as in scripts/quality.py.
    options = FitOptions(
        epochs=args.epochs, seed=args.seed, patience=args.epochs, lr_schedule="cosine"
    )
    result = fit(data, work / f"artifact-{model}", config, options, log=lambda _: None)
    _, val = split(data, val_split=options.val_split, seed=options.seed)
    genders, products = _labels(result.artifact)
    shape = dict(
        gender_labels=genders,
        product_labels=products,
        image_size=config.image_size,
        use_text=config.use_text,
        batch_size=options.batch_size,
    )
    val_modes = predict_modes(result.model, val, source=data.source, **shape)
    val_true = encode(val, genders, products, data.source)
    held_modes = predict_modes(result.model, held.examples, source=held.source, **shape)
    held_true = encode(held.examples, genders, products, held.source)
    calibrations: dict[str, Calibration] = {
        name: calibrate(val_modes, *val_true, **kw) for name, kw in UNGUARDED.items()
    }
    calibrations[GUARDED] = result.calibration
    name = "image+text" if config.use_text else "image only"
    rows = []
    for head, true in ((GENDER, held_true[0]), (PRODUCT, held_true[1])):
        labels = genders if head == GENDER else products
        for mode, pair in held_modes.items():
            probs = pair[0] if head == GENDER else pair[1]
            captioned = mode == IMAGE_TEXT
            scores = {RAW: np.asarray(probs, np.float64)}
            scores |= {n: c.apply(head, probs, captioned) for n, c in calibrations.items()}
            fitted = (result.calibration.heads if captioned else _uncaptioned(result))[head]
            rows.append(
                {
                    "model": name,
                    "head": head,
                    "mode": "image + caption" if captioned else "image only",
                    "top1": float(np.mean(probs.argmax(axis=1) == true)),
                    "scores": scores,
                    "true": true,
                    "choice": f"T {fitted.temperature:.2f}" if fitted.applied else "raw",
                    "review": _review(result.review, head, scores[GUARDED], true, labels),
                }
            )
    temps = ", ".join(f"{r['head']} {r['mode']}: {r['choice']}" for r in rows if r["model"] == name)
    return rows, f"{name} (validation split of {len(val)}): {temps}"


def _uncaptioned(result):
    c = result.calibration
    return c.uncaptioned or c.heads


def _review(
    review: ReviewThresholds, head: str, scores: np.ndarray, true: np.ndarray, labels: list[str]
) -> tuple[float, float]:
    """(share of tags needing review, share of the others that are right) on held-out."""
    flagged = head_needs_review(review, head, scores, labels)
    kept = ~flagged
    right = scores.argmax(axis=1)[kept] == true[kept]
    return float(flagged.mean()), float(right.mean()) if kept.any() else float("nan")


def _print(
    rows: list[dict], notes: list[str], args, trained: int, held_seed: int, held_n: int
) -> None:
    print(
        f"\ntrained on {trained} synthetic items (seed {args.seed}, "
        f"{args.image_size}px, {args.epochs} epochs); calibrated on the validation split; "
        f"measured on {held_n} held-out items (seed {held_seed}); ECE of the top class, 15 "
        "bins. guarded: fit's calibration (T: the temperature used; raw: turned down)"
    )
    for note in notes:
        print(f"  {note}")
    head = f"{'model':11} {'head':8} {'input':16} {'top-1':>6}"
    print(head + "".join(f" {c:>15}" for c in COLUMNS) + "  choice   review: share, right")
    pooled: dict[str, tuple[list, list]] = {c: ([], []) for c in COLUMNS}
    worse = 0
    for r in rows:
        eces = {}
        for c in COLUMNS:
            s = r["scores"][c]
            eces[c] = expected_calibration_error(s, r["true"])
            pooled[c][0].append(s.max(axis=1))
            pooled[c][1].append(s.argmax(axis=1) == r["true"])
        worse += eces[GUARDED] > eces[RAW]
        share, right = r["review"]
        print(
            f"{r['model']:11} {r['head']:8} {r['mode']:16} {r['top1']:>6.3f}"
            + "".join(f" {eces[c]:>15.4f}" for c in COLUMNS)
            + f"  {r['choice']:8} {share:>6.3f}, {right:.3f}"
        )
    overall = {
        c: reliability_of(np.concatenate(a), np.concatenate(b)).ece for c, (a, b) in pooled.items()
    }
    print(f"{'overall':44}" + "".join(f" {overall[c]:>15.4f}" for c in COLUMNS))
    print(f"heads where guarded > raw: {worse} of {len(rows)}")


def _labels(artifact: Path) -> tuple[list[str], list[str]]:
    from tagger.artifacts import read_artifact_info

    info = read_artifact_info(artifact)
    return info.gender_labels, info.product_labels


if __name__ == "__main__":
    sys.exit(main())
