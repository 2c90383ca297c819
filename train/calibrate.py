"""Calibrating a trained model on its validation split, its review thresholds, and the
reliability diagram.

The method and its figures are ``tagger.calibration``'s (fitted by
``tagger.calibration_fit``); this module feeds it fit's validation predictions
(``train.evaluate.predict_modes``). A text model is calibrated twice per head: on the
predictions with captions (the worker feeds an item's title) and, as the calibration's
``uncaptioned`` parameters, on the same items with their captions blanked (the worker's
input for an item without a title). An image-only model has the one image-only set.

The review thresholds (``tagger.review``) are fitted on the same split's calibrated
scores; for a text model on both inputs pooled (each item once with its caption, once
without), as the worker tags items with and without a title and one threshold per class
serves both.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from tagger.artifacts import GENDER_HEAD, PRODUCT_HEAD
from tagger.calibration import DEFAULT_METHOD, Calibration, Reliability, reliability
from tagger.calibration_fit import fit_calibration
from tagger.review import ReviewThresholds, fit_review_thresholds
from train.evaluate import IMAGE_ONLY, IMAGE_TEXT

RELIABILITY_FILE = "reliability.png"
MODE_NAMES = {IMAGE_ONLY: "image only", IMAGE_TEXT: "image + caption"}

#: {mode: (gender probabilities, product probabilities)}, as predict_modes returns them
ModeProbs = Mapping[str, tuple[np.ndarray, np.ndarray]]


def calibrate(
    probs: ModeProbs,
    gender_true: np.ndarray,
    product_true: np.ndarray,
    *,
    method: str = DEFAULT_METHOD,
    fitted_on: str = "",
    guard: bool = True,
    smoothed: bool = True,
) -> Calibration:
    """One temperature per head (per head and caption use for a text model), fitted on
    the predictions of each mode against the true class indices, each used only where
    cross-validation says it lowers the ECE (``tagger.calibration_fit``; ``guard`` and
    ``smoothed`` as there: benchmarks/calibration.py compares the fit without them)."""
    if IMAGE_ONLY not in probs:  # predict_modes always has it; a text model both
        raise ValueError(f"no {IMAGE_ONLY} predictions to calibrate on: {sorted(probs)}")
    if IMAGE_TEXT in probs:
        heads, uncaptioned = probs[IMAGE_TEXT], probs[IMAGE_ONLY]
    else:
        heads, uncaptioned = probs[IMAGE_ONLY], None
    return fit_calibration(
        _by_head(heads, gender_true, product_true),
        uncaptioned=None
        if uncaptioned is None
        else _by_head(uncaptioned, gender_true, product_true),
        method=method,
        fitted_on=fitted_on,
        guard=guard,
        smoothed=smoothed,
    )


def review_thresholds(
    calibration: Calibration,
    probs: ModeProbs,
    gender_true: np.ndarray,
    product_true: np.ndarray,
    *,
    gender_labels: list[str],
    product_labels: list[str],
    fitted_on: str = "",
) -> ReviewThresholds:
    """Per-class review thresholds on the calibrated scores of every mode, pooled."""
    scores = {GENDER_HEAD: [], PRODUCT_HEAD: []}
    for mode, pair in probs.items():
        for head, (raw, _) in _by_head(pair, gender_true, product_true).items():
            scores[head].append(calibration.apply(head, raw, captioned=mode == IMAGE_TEXT))
    return fit_review_thresholds(
        np.concatenate(scores[GENDER_HEAD]),
        np.tile(np.asarray(gender_true), len(probs)),
        np.concatenate(scores[PRODUCT_HEAD]),
        np.tile(np.asarray(product_true), len(probs)),
        gender_labels=gender_labels,
        product_labels=product_labels,
        fitted_on=fitted_on,
    )


def reliabilities(
    calibration: Calibration,
    probs: ModeProbs,
    gender_true: np.ndarray,
    product_true: np.ndarray,
) -> dict[str, tuple[Reliability, Reliability]]:
    """{"head" or "head, mode": (reliability of the raw scores, of the calibrated ones)}."""
    out = {}
    for head in (GENDER_HEAD, PRODUCT_HEAD):
        for mode, pair in probs.items():
            scores, labels = _by_head(pair, gender_true, product_true)[head]
            calibrated = calibration.apply(head, scores, captioned=mode == IMAGE_TEXT)
            name = f"{head}, {MODE_NAMES[mode]}" if len(probs) > 1 else head
            out[name] = (
                reliability(scores, labels, bins=calibration.bins),
                reliability(calibrated, labels, bins=calibration.bins),
            )
    return out


def write_reliability(
    out_dir: Path | str,
    calibration: Calibration,
    probs: ModeProbs,
    gender_true: np.ndarray,
    product_true: np.ndarray,
) -> Path:
    """The before/after reliability diagrams as ``out_dir/reliability.png``."""
    from train.plots import plot_reliability

    return plot_reliability(
        reliabilities(calibration, probs, gender_true, product_true),
        Path(out_dir) / RELIABILITY_FILE,
        title=f"{calibration.method}, {calibration.fitted_on}".rstrip(", "),
    )


def format_calibration(calibration: Calibration) -> str:
    """One line per head (and caption use): the temperature, whether it is used (and its
    cross-validated ECE against the raw scores'), and ECE before -> after."""
    lines = [f"calibration ({calibration.method}, {calibration.fitted_on}):"]
    groups = [("", calibration.heads)]
    if calibration.uncaptioned:
        groups = [(MODE_NAMES[IMAGE_TEXT], calibration.heads)]
        groups.append((MODE_NAMES[IMAGE_ONLY], calibration.uncaptioned))
    for mode, heads in groups:
        for head, p in heads.items():
            used = "used" if p.applied else "raw kept"
            cv = "" if p.folds is None else f", {p.folds}-fold ECE {_num(p.ece_cv)}"
            lines.append(
                f"  {head:8}{mode:16} T {p.temperature:.3f} ({used}{cv})  "
                f"ECE {_num(p.ece_before)} -> {_num(p.ece_after)}  ({p.items} items)"
            )
    return "\n".join(lines)


def format_review(review: ReviewThresholds) -> str:
    """The thresholds per head and class, and which classes took the pooled one."""
    lines = [f"review thresholds (precision {review.target_precision:g}, {review.fitted_on}):"]
    for head, measure in ((GENDER_HEAD, "score"), (PRODUCT_HEAD, "margin")):
        support = review.support.get(head, {})
        cells = []
        for label, t in review.head(head).items():
            n = support.get(label)
            own = n is None or n >= review.min_predictions
            cells.append(f"{label} {t:.3f}" + ("" if own else "*"))
        pooled = review.pooled.get(head)
        lines.append(f"  {head} {measure} (pooled {_num(pooled)}): " + ", ".join(cells))
    lines.append(f"  * fewer than {review.min_predictions} predictions: the pooled threshold")
    return "\n".join(lines)


def _by_head(
    pair: tuple[np.ndarray, np.ndarray], gender_true: np.ndarray, product_true: np.ndarray
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    return {GENDER_HEAD: (pair[0], gender_true), PRODUCT_HEAD: (pair[1], product_true)}


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"
