"""Calibrating a trained model on its validation split, and the reliability diagram.

The method and its figures are ``tagger.calibration``'s; this module feeds it fit's
validation predictions (``train.evaluate.predict_modes``). A text model is calibrated
twice per head: on the predictions with captions (the worker feeds an item's title) and,
as the calibration's ``uncaptioned`` parameters, on the same items with their captions
blanked (the worker's input for an item without a title). An image-only model has the
one image-only set.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from tagger.artifacts import GENDER_HEAD, PRODUCT_HEAD
from tagger.calibration import (
    DEFAULT_METHOD,
    Calibration,
    Reliability,
    fit_calibration,
    reliability,
)
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
) -> Calibration:
    """One temperature per head (per head and caption use for a text model), fitted on
    the predictions of each mode against the true class indices."""
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
    """One line per head (and caption use): temperature and ECE before -> after."""
    lines = [f"calibration ({calibration.method}, {calibration.fitted_on}):"]
    groups = [("", calibration.heads)]
    if calibration.uncaptioned:
        groups = [(MODE_NAMES[IMAGE_TEXT], calibration.heads)]
        groups.append((MODE_NAMES[IMAGE_ONLY], calibration.uncaptioned))
    for mode, heads in groups:
        for head, p in heads.items():
            lines.append(
                f"  {head:8}{mode:16} T {p.temperature:.3f}  "
                f"ECE {_num(p.ece_before)} -> {_num(p.ece_after)}  ({p.items} items)"
            )
    return "\n".join(lines)


def _by_head(
    pair: tuple[np.ndarray, np.ndarray], gender_true: np.ndarray, product_true: np.ndarray
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    return {GENDER_HEAD: (pair[0], gender_true), PRODUCT_HEAD: (pair[1], product_true)}


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"
