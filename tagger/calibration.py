"""Calibrated scores: per-head temperature scaling, applied and serialised.

Pure numpy (no TensorFlow, database or storage imports), so the worker can apply a stored
calibration and the trainer can fit one with the same code. Fitting is
``tagger.calibration_fit``; measuring calibration (ECE, reliability-diagram data, the
top-two margin) is ``tagger.reliability``, re-exported here.

Both heads are independent sigmoids trained with positive-weighted cross-entropy
(``train.fit``), so their raw scores need not sum to one and are often over-confident: a
weakly trained model can give 1.0 to two product types at once. A head's calibration is
one temperature ``T`` and one of two methods:

* ``softmax_temperature``: ``softmax(logit(p) / T)`` across the head's classes, with
  ``logit(p) = log(p / (1 - p))`` of the clipped score. Scores sum to one, so the margin
  between the top two says how close the call between them was;
* ``sigmoid_temperature``: ``sigmoid(logit(p) / T)`` per class. Scores stay independent.

Both keep each row's order of classes: tags do not change, only their scores. A head's
temperature is used only where cross-validation on the validation split says it lowers
the expected calibration error (``HeadCalibration.applied``); otherwise the head keeps
its raw scores, and the calibration records the temperature it turned down and why.

``softmax_temperature`` is the one fit uses. Measured by ``benchmarks/calibration.py``
(models trained from a random backbone on 816 synthetic items, 48 px, 12 epochs, seed
42; calibrated on their 204-item validation split; ECE of the top class, 15 bins, on
680 held-out synthetic items drawn with another seed). Each temperature column is always
applied; ``0/1`` is the softmax fitted against 0/1 targets (fit's method before the
guard), ``softmax`` against the smoothed ones; ``guarded`` is what fit stores, the
softmax where cross-validation kept it (its T) and the raw scores where it did not;
``overall`` is one ECE over all 4,080 held-out predictions of the six rows pooled::

    model       head     input            top-1    raw  sigmoid     0/1  softmax  guarded
    image+text  gender   image only       0.968  0.0144  0.0110  0.0179  0.0139  0.0139 T 1.54
    image+text  gender   image + caption  0.997  0.0080  0.0093  0.0045  0.0095  0.0080 raw
    image+text  product  image only       0.121  0.4781  0.4677  0.0791  0.0788  0.0788 T 2.94
    image+text  product  image + caption  0.988  0.0235  0.0081  0.0074  0.0039  0.0039 T 0.72
    image only  gender   image            0.978  0.0147  0.0120  0.0198  0.0125  0.0125 T 1.31
    image only  product  image            0.522  0.3350  0.3261  0.0444  0.0485  0.0485 T 0.73
    overall                                      0.1280  0.1325  0.0254  0.0221  0.0218

Guarded, no head is worse than raw and the overall ECE falls from 0.128 to 0.022; the
softmax fitted against 0/1 targets raised both image-only gender heads (0.0144 ->
0.0179, 0.0147 -> 0.0198). Where the raw scores are badly calibrated (a weak product
head: top scores far above how often its tag is right, 12% or 52% of the time) only the
softmax helps, by 0.29-0.40: it shares the probability among the classes that all score
high, which is exactly the hedging a set of independent sigmoids hides. The sigmoid
temperature is fitted on every class's target, which the many true negatives dominate,
and it barely moves the top class there.

A validation split on which a head is never wrong has no finite maximum-likelihood
temperature (sharper is always likelier); fitting against smoothed targets
(``tagger.calibration_fit``) gives it a finite one instead of the search's lower bound,
whose scores were mostly 0s and 1s.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

# Measuring calibration is tagger.reliability's; re-exported (``X as X``) so that
# applying and measuring are one import for the trainer and the tests.
from tagger.reliability import N_BINS, as_matrix
from tagger.reliability import Reliability as Reliability
from tagger.reliability import expected_calibration_error as expected_calibration_error
from tagger.reliability import reliability as reliability
from tagger.reliability import top_two_margin as top_two_margin

SOFTMAX_TEMPERATURE = "softmax_temperature"
SIGMOID_TEMPERATURE = "sigmoid_temperature"
METHODS = (SOFTMAX_TEMPERATURE, SIGMOID_TEMPERATURE)
DEFAULT_METHOD = SOFTMAX_TEMPERATURE
#: scores are clipped to [EPS, 1 - EPS] before the logit: float32 sigmoids saturate at
#: exactly 0 and 1, whose logits are infinite; 1e-6 keeps logits within +-13.8
EPS = 1e-6


@dataclass(frozen=True)
class HeadCalibration:
    """One head's fitted temperature, whether it is used, and the validation figures
    it was chosen on (all on the split it was fitted on)."""

    temperature: float
    #: expected calibration error of the raw scores and of the scores as applied (the
    #: calibrated ones when ``applied``, else the raw ones again)
    ece_before: float | None = None
    ece_after: float | None = None
    #: predictions it was fitted on
    items: int | None = None
    #: False: the head keeps its raw scores (the temperature did not lower the
    #: cross-validated ECE). Files written before the guard existed have no such key and
    #: were always applied
    applied: bool = True
    #: cross-validated ECE of the temperature: each item's calibrated score comes from a
    #: temperature fitted without it (``folds``-fold, averaged over repeated splits)
    ece_cv: float | None = None
    folds: int | None = None


@dataclass(frozen=True)
class Calibration:
    """A method and per-head parameters; a head without parameters, or whose parameters
    are not ``applied``, is left as it is.

    A model that reads captions scores an item differently with and without one (the
    worker feeds an empty caption for an item without a title), so it has a second set,
    ``uncaptioned``, fitted on the validation split with its captions blanked. One
    temperature fitted on both pooled was a bad compromise (benchmarks/calibration.py):
    it raised the product head's held-out ECE with captions from 0.009 to 0.117 to bring
    the uncaptioned rows' down from 0.478. An image-only model has ``heads`` only.
    """

    method: str
    heads: Mapping[str, HeadCalibration]
    #: text models: the parameters of rows fed no caption; empty: ``heads`` for all rows
    uncaptioned: Mapping[str, HeadCalibration] = field(default_factory=dict)
    bins: int = N_BINS
    #: a human description of the data it was fitted on
    fitted_on: str = ""

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"unknown calibration method {self.method!r}; one of {METHODS}")
        for head, params in [*self.heads.items(), *self.uncaptioned.items()]:
            t = params.temperature
            number = isinstance(t, int | float) and not isinstance(t, bool)
            if not number or not np.isfinite(t) or t <= 0:
                raise ValueError(f"calibration of {head!r}: temperature must be > 0, got {t!r}")
            if not isinstance(params.applied, bool):
                raise ValueError(f"calibration of {head!r}: applied must be true or false")

    def apply(
        self, head: str, probs: np.ndarray, captioned: bool | Sequence[bool] | np.ndarray = True
    ) -> np.ndarray:
        """Calibrated (N, classes) scores of ``head``; raw ones where it has no parameters
        (or they are not applied).

        ``captioned``: per row (or for all), whether the model was fed a caption; rows fed
        none use ``uncaptioned``'s parameters where there are some.
        """
        raw = as_matrix(probs)
        mask = np.broadcast_to(np.asarray(captioned, dtype=bool), raw.shape[:1])
        out = raw.copy()
        with_caption = self.heads.get(head)
        without = self.uncaptioned.get(head, with_caption)
        for rows, params in ((mask, with_caption), (~mask, without)):
            if params is not None and params.applied and rows.any():
                out[rows] = transform(self.method, raw[rows], params.temperature)
        return out

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types, as stored in the artifact's calibration.json."""
        return {
            "method": self.method,
            "bins": self.bins,
            "fitted_on": self.fitted_on,
            "heads": _heads_to_dict(self.heads),
            "uncaptioned": _heads_to_dict(self.uncaptioned),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Calibration:
        """The inverse of :meth:`to_dict`; ValueError names what is malformed."""
        bins = data.get("bins", N_BINS)
        if not isinstance(bins, int) or isinstance(bins, bool) or bins < 1:
            raise ValueError(f"calibration: bins must be a positive integer, got {bins!r}")
        return cls(
            method=data.get("method", ""),
            heads=_heads_from_dict(data.get("heads"), "heads"),
            uncaptioned=_heads_from_dict(data.get("uncaptioned", {}), "uncaptioned"),
            bins=bins,
            fitted_on=str(data.get("fitted_on") or ""),
        )


def _heads_to_dict(heads: Mapping[str, HeadCalibration]) -> dict[str, Any]:
    out = {}
    for head, p in heads.items():
        row = {
            "temperature": float(p.temperature),
            "applied": p.applied,
            "ece_before": _opt_float(p.ece_before),
            "ece_after": _opt_float(p.ece_after),
            "items": p.items,
        }
        # only where there was a cross-validation: older files round-trip unchanged
        if p.ece_cv is not None or p.folds is not None:
            row.update(ece_cv=_opt_float(p.ece_cv), folds=p.folds)
        out[head] = row
    return out


def _heads_from_dict(heads: Any, key: str) -> dict[str, HeadCalibration]:
    if not isinstance(heads, Mapping):
        raise ValueError(f"calibration: {key!r} must be an object of head -> parameters")
    parsed = {}
    for head, p in heads.items():
        if not isinstance(p, Mapping) or "temperature" not in p:
            raise ValueError(f"calibration of {head!r}: no temperature")
        parsed[str(head)] = HeadCalibration(
            temperature=p["temperature"],
            ece_before=p.get("ece_before"),
            ece_after=p.get("ece_after"),
            items=p.get("items"),
            applied=p.get("applied", True),
            ece_cv=p.get("ece_cv"),
            folds=p.get("folds"),
        )
    return parsed


def apply_calibration(
    calibration: Calibration | None,
    head: str,
    probs: np.ndarray,
    captioned: bool | Sequence[bool] | np.ndarray = True,
) -> np.ndarray:
    """``calibration.apply(...)``, or the raw scores when there is no calibration."""
    if calibration is None:
        return np.asarray(probs, dtype=np.float64)
    return calibration.apply(head, probs, captioned)


def logits(probs: np.ndarray) -> np.ndarray:
    """``log(p / (1 - p))`` of the scores clipped to [EPS, 1 - EPS], in float64."""
    p = np.clip(np.asarray(probs, dtype=np.float64), EPS, 1.0 - EPS)
    return np.log(p) - np.log1p(-p)


def softmax(z: np.ndarray) -> np.ndarray:
    """Row-wise softmax, shifted by each row's maximum so large logits do not overflow."""
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def sigmoid(z: np.ndarray) -> np.ndarray:
    # exp of a negative number only, so neither branch overflows
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def transform(method: str, probs: np.ndarray, temperature: float) -> np.ndarray:
    """Scores of ``method`` at ``temperature`` from raw (N, classes) sigmoid scores."""
    z = logits(as_matrix(probs)) / temperature
    if method == SOFTMAX_TEMPERATURE:
        return softmax(z)
    if method == SIGMOID_TEMPERATURE:
        return sigmoid(z)
    raise ValueError(f"unknown calibration method {method!r}; one of {METHODS}")


def _opt_float(value: float | None) -> float | None:
    return None if value is None else float(value)
