"""Turning model probabilities into tags: pure numpy, no TensorFlow.

Both heads are independent sigmoids (see ``train.model``), so a head's raw scores need
not sum to one; the tag is the most probable class and its score is that class's
probability. Given the artifact's calibration (``tagger.calibration``), every score is
the calibrated one instead; calibration keeps the order of a row's classes, so the
tag stays the same (barring scores that clipping or rounding make equal).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from tagger.calibration import Calibration, apply_calibration
from tagger.reliability import top_two_margin

# Six decimals is well below any threshold a user filters on and keeps JSONB rows small.
DECIMALS = 6


@dataclass(frozen=True)
class Prediction:
    """The tag for one image. All numbers are plain Python floats (JSON-serialisable)."""

    gender: str
    gender_score: float
    product_type: str
    product_score: float
    #: every class probability: {"gender": {label: p}, "product": {label: p}}
    scores: dict[str, dict[str, float]]
    #: best minus second-best product score, of the scores as stored (rounded, and
    #: calibrated when a calibration was given): small means "a close call"
    product_margin: float | None = None


def to_predictions(
    gender_probs: np.ndarray,
    product_probs: np.ndarray,
    *,
    gender_labels: Sequence[str],
    product_labels: Sequence[str],
    calibration: Calibration | None = None,
    captioned: Sequence[bool] | None = None,
) -> list[Prediction]:
    """One :class:`Prediction` per row of the two (N, classes) probability arrays.

    With ``calibration``, the raw probabilities are calibrated first and every score of
    the Predictions is a calibrated one; without it (None), they are the raw ones.
    ``captioned`` says per row whether the model was fed a caption (a text model's rows
    without one use the calibration's ``uncaptioned`` parameters); None: every row was.
    """
    gender = _check(gender_probs, gender_labels, "gender")
    product = _check(product_probs, product_labels, "product")
    if gender.shape[0] != product.shape[0]:
        raise ValueError(
            f"gender and product probabilities have {gender.shape[0]} and {product.shape[0]} rows"
        )
    # Calibrated before rounding: the raw float32 scores carry more than six decimals of
    # logit that the temperature scales.
    rows: bool | np.ndarray = True
    if captioned is not None:
        rows = np.asarray(captioned, dtype=bool)
        if rows.shape != gender.shape[:1]:
            raise ValueError(f"captioned has {len(captioned)} entries for {gender.shape[0]} rows")
    gender = np.round(apply_calibration(calibration, "gender", gender, rows), DECIMALS)
    product = np.round(apply_calibration(calibration, "product", product, rows), DECIMALS)
    g_best = np.argmax(gender, axis=1)
    p_best = np.argmax(product, axis=1)
    # From the rounded scores and rounded again, so the margin is exactly what comparing
    # the stored top two scores gives (no float noise such as 0.30000000000000004).
    margins = np.round(top_two_margin(product), DECIMALS)
    out: list[Prediction] = []
    # tolist() converts to Python floats in one go (numpy floats are not JSON-serialisable).
    for g_row, p_row, g_i, p_i, margin in zip(
        gender.tolist(),
        product.tolist(),
        g_best.tolist(),
        p_best.tolist(),
        margins.tolist(),
        strict=True,
    ):
        out.append(
            Prediction(
                gender=gender_labels[g_i],
                gender_score=g_row[g_i],
                product_type=product_labels[p_i],
                product_score=p_row[p_i],
                scores={
                    "gender": dict(zip(gender_labels, g_row, strict=True)),
                    "product": dict(zip(product_labels, p_row, strict=True)),
                },
                product_margin=margin,
            )
        )
    return out


def _check(probs: np.ndarray, labels: Sequence[str], head: str) -> np.ndarray:
    arr = np.asarray(probs, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != len(labels):
        raise ValueError(
            f"{head} probabilities have shape {arr.shape}, expected (N, {len(labels)})"
        )
    if len(set(labels)) != len(labels) or not labels:
        raise ValueError(f"{head} labels must be non-empty and unique: {list(labels)}")
    # NaN/inf (e.g. a float16 overflow) would silently become a wrong tag and invalid
    # JSON; fail loudly instead.
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{head} probabilities contain NaN or infinity")
    return arr
