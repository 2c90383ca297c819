"""Measuring calibration: reliability-diagram data, expected calibration error, margins.

Pure numpy, like ``tagger.calibration`` (which re-exports all of this): the figures are
about the top class of a head, the one that becomes the tag. ECE is the usual one (Guo et
al., 2017): items are put in equal-width bins by their top score, and each bin's gap
between its accuracy and its mean top score is weighted by its share of the items.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: equal-width confidence bins of the expected calibration error (Guo et al. use 15)
N_BINS = 15


@dataclass(frozen=True)
class Reliability:
    """Per equal-width confidence bin: its edges, item count, mean top-class confidence
    and accuracy (NaN where the bin is empty); ``ece`` weighs each bin's gap by its count."""

    edges: np.ndarray
    counts: np.ndarray
    confidence: np.ndarray
    accuracy: np.ndarray
    ece: float


def reliability(scores: np.ndarray, labels: np.ndarray, *, bins: int = N_BINS) -> Reliability:
    """Reliability-diagram data of the top class: its score against being right."""
    s = as_matrix(scores)
    labels = np.asarray(labels)
    if labels.shape != (s.shape[0],):
        raise ValueError(f"labels have shape {labels.shape}, expected ({s.shape[0]},)")
    return reliability_of(s.max(axis=1), s.argmax(axis=1) == labels, bins=bins)


def reliability_of(
    confidence: np.ndarray, correct: np.ndarray, *, bins: int = N_BINS
) -> Reliability:
    """Reliability-diagram data of predictions given as their confidence and whether each
    was right: :func:`reliability` of the top class, or predictions of several heads
    pooled (one ECE over all of them)."""
    conf = np.asarray(confidence, dtype=np.float64)
    right = np.asarray(correct, dtype=np.float64)
    if conf.ndim != 1 or right.shape != conf.shape:
        raise ValueError(f"confidence {conf.shape} and correct {right.shape} must be (N,)")
    if conf.shape[0] == 0:
        raise ValueError("no predictions to measure")
    # Bins are (lower, upper], the first one [0, 1/bins]: a confidence of exactly 1.0 is
    # in the last bin and one of exactly 0 in the first.
    index = np.clip(np.ceil(conf * bins).astype(np.int64) - 1, 0, bins - 1)
    counts = np.bincount(index, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(index, weights=conf, minlength=bins) / counts
        accuracy = np.bincount(index, weights=right, minlength=bins) / counts
    gaps = np.where(counts > 0, np.abs(accuracy - mean_conf), 0.0)
    return Reliability(
        edges=np.linspace(0.0, 1.0, bins + 1),
        counts=counts,
        confidence=mean_conf,
        accuracy=accuracy,
        ece=float((gaps * counts).sum() / counts.sum()),
    )


def expected_calibration_error(
    scores: np.ndarray, labels: np.ndarray, *, bins: int = N_BINS
) -> float:
    """ECE of the top class: sum over bins of |accuracy - confidence| x share of items."""
    return reliability(scores, labels, bins=bins).ece


def top_two_margin(scores: np.ndarray) -> np.ndarray:
    """Per row, the best score minus the second best (the best itself for one class)."""
    s = as_matrix(scores)
    if s.shape[1] == 1:
        return s[:, 0].copy()
    top2 = np.partition(s, s.shape[1] - 2, axis=1)[:, -2:]
    return top2[:, 1] - top2[:, 0]


def as_matrix(probs: np.ndarray) -> np.ndarray:
    """``probs`` as a float64 (N, classes) array; ValueError for any other shape."""
    arr = np.asarray(probs, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] == 0:
        raise ValueError(f"scores must have shape (N, classes), got {arr.shape}")
    return arr
