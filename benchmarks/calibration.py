"""Calibration benchmark: does calibrating on the validation split help on unseen items?

    .venv/bin/python benchmarks/calibration.py [--n 1020] [--held-out 680] [--epochs 12]

Draws a synthetic catalogue (``train.synthetic``) and trains a small model on it with
``train.fit.fit`` (a random backbone on small images, so it runs on a CPU in minutes),
then fits both calibration methods of ``tagger.calibration`` on that run's validation
split as ``fit`` itself does (a text model: with captions, and again with them blanked,
for items without a title), and measures each head's expected calibration error (top
class, 15 bins) before and after on a second synthetic catalogue drawn with another seed
that the model has never seen, per input mode. For a text model it also shows one
softmax temperature fitted on both modes pooled, the design this replaced.
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

from tagger.calibration import METHODS, SOFTMAX_TEMPERATURE, expected_calibration_error
from tagger.calibration_fit import fit_calibration
from train.calibrate import calibrate
from train.data import encode, read_labelled, split
from train.evaluate import IMAGE_TEXT, predict_modes
from train.fit import FitOptions, fit
from train.model import ModelConfig
from train.synthetic import generate

POOLED = "softmax, one T"
#: the held-out catalogue's seed is the training one plus this: other items, same recipe
HELD_OUT_SEED_OFFSET = 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1020, help="items to train and validate on")
    parser.add_argument("--held-out", type=int, default=680, help="unseen items to measure on")
    parser.add_argument("--image-size", type=int, default=48)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--seed", type=int, default=FitOptions.seed)
    parser.add_argument("--no-text", action="store_true", help="an image-only model")
    parser.add_argument("--keep", type=Path, help="keep the data and artifact in this folder")
    args = parser.parse_args()

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
        config = ModelConfig(
            image_size=args.image_size,
            use_text=not args.no_text,
            backbone_weights=None,
            train_backbone=True,  # a random backbone must learn (train.cli does the same)
        )
        # No early stop, so the run is the planned length; cosine as in scripts/quality.py.
        options = FitOptions(
            epochs=args.epochs, seed=args.seed, patience=args.epochs, lr_schedule="cosine"
        )
        result = fit(data, work / "artifact", config, options)
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
        # Each method as fit does it (per caption use for a text model) and, for a text
        # model, the softmax with one temperature fitted on both uses pooled.
        calibrations = {m: calibrate(val_modes, *val_true, method=m) for m in METHODS}
        if len(val_modes) > 1:
            pooled = {
                head: (
                    np.concatenate([h[head][0] for h in _heads(val_modes, val_true)]),
                    np.concatenate([h[head][1] for h in _heads(val_modes, val_true)]),
                )
                for head in ("gender", "product")
            }
            calibrations[POOLED] = fit_calibration(pooled, method=SOFTMAX_TEMPERATURE)

        print(
            f"\ntrained on {len(data.examples) - len(val)} synthetic items (seed {args.seed}, "
            f"{args.image_size}px, {args.epochs} epochs, "
            f"{'image+text' if config.use_text else 'image-only'} model); calibrated on the "
            f"validation split ({len(val)} items); measured on {len(held.examples)} held-out "
            f"items (seed {held_seed}); ECE of the top class, 15 bins"
        )
        for name, c in calibrations.items():
            groups = [("", c.heads)] + ([(" no caption", c.uncaptioned)] if c.uncaptioned else [])
            temps = ", ".join(
                f"{h}{g} {p.temperature:.3f}" for g, heads in groups for h, p in heads.items()
            )
            print(f"  T of {name}: {temps}")
        print(
            f"{'head':8} {'mode':11} {'top1':>6} {'raw':>8}"
            + "".join(f" {name:>20}" for name in calibrations)
        )
        for head in ("gender", "product"):
            for mode, pair in held_modes.items():
                probs, true = _heads({mode: pair}, held_true)[0][head]
                top1 = float(np.mean(probs.argmax(axis=1) == true))
                raw = expected_calibration_error(probs, true)
                captioned = mode == IMAGE_TEXT
                eces = [
                    expected_calibration_error(c.apply(head, probs, captioned), true)
                    for c in calibrations.values()
                ]
                cells = "".join(f" {e:>20.4f}" for e in eces)
                print(f"{head:8} {mode:11} {top1:>6.3f} {raw:>8.4f}{cells}")
        print(f"({time.monotonic() - started:.0f}s)")
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    return 0


def _heads(
    modes: dict[str, tuple[np.ndarray, np.ndarray]], true: tuple[np.ndarray, np.ndarray]
) -> list[dict[str, tuple[np.ndarray, np.ndarray]]]:
    """Per mode, {head: (probabilities, true class indices)}."""
    return [{"gender": (g, true[0]), "product": (p, true[1])} for g, p in modes.values()]


def _labels(artifact: Path) -> tuple[list[str], list[str]]:
    from tagger.artifacts import read_artifact_info

    info = read_artifact_info(artifact)
    return info.gender_labels, info.product_labels


if __name__ == "__main__":
    sys.exit(main())
