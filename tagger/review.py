"""Review thresholds: per class, the confidence under which a tag needs a person's look.

Pure numpy (no TensorFlow, database or storage imports). A tag of product type ``P``
whose product margin (best calibrated product score minus the second best,
``tagger.reliability.top_two_margin``) is below ``product[P]`` needs review; so does a
tag of gender ``G`` whose calibrated gender score is below ``gender[G]``. A class without
a threshold never does.

Fitted on the validation split's calibrated scores (``train.fit``), rounded as the tags
store them (``tagger.scoring.DECIMALS``). Each class's threshold is the smallest ``t``
such that the validation predictions of that class with a confidence ``>= t`` are right
at least ``target_precision`` of the time:

* ``0.0`` when all of the class's predictions together already are: none needs review;
* ``ABOVE_ANY`` (above every score and margin) when not even its most confident ones
  are: every tag of the class needs review;
* a class predicted fewer than ``min_predictions`` times (default 10) on the split,
  or never, gets its head's pooled threshold instead: the same rule over every
  prediction of the head, whatever its class. Ten predictions can show a 95% precision
  only by being all right, and fewer cannot show it at all, so a class's own figure
  below that would be noise. ``support`` records each class's count, so which classes
  fell back can be read from the file.

The precision asked for is the one measured on the split: with ``n`` predictions above a
threshold, the estimate's own error is about ``sqrt(p (1 - p) / n)`` (0.07 for 10 at 95%).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tagger.reliability import as_matrix, top_two_margin
from tagger.scoring import DECIMALS

GENDER, PRODUCT = "gender", "product"
HEADS = (GENDER, PRODUCT)
TARGET_PRECISION = 0.95
MIN_PREDICTIONS = 10
#: above every score and margin (they are at most 1.0 as stored, to six decimals): a
#: class whose tags all need review
ABOVE_ANY = 1.000001


@dataclass(frozen=True)
class ReviewThresholds:
    """Per head, {class: threshold}, and what they were fitted on (review.json)."""

    target_precision: float
    product: Mapping[str, float]
    gender: Mapping[str, float]
    fitted_on: str = ""
    min_predictions: int = MIN_PREDICTIONS
    #: per head, the threshold over all its classes (a class with too few predictions's)
    pooled: Mapping[str, float] = field(default_factory=dict)
    #: per head, {class: validation predictions of it}
    support: Mapping[str, Mapping[str, int]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        p = self.target_precision
        if not _is_number(p) or not 0 < p <= 1:
            raise ValueError(f"review: target_precision must be in (0, 1], got {p!r}")
        m = self.min_predictions
        if not isinstance(m, int) or isinstance(m, bool) or m < 1:
            raise ValueError(f"review: min_predictions must be a positive integer, got {m!r}")
        for head in HEADS:
            _check_thresholds(self.head(head), head)
        _check_thresholds(self.pooled, "pooled")
        if set(self.pooled) - set(HEADS) or set(self.support) - set(HEADS):
            raise ValueError(f"review: pooled and support are per head, one of {HEADS}")
        for head, counts in self.support.items():
            if not isinstance(counts, Mapping) or not all(
                isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in counts.values()
            ):
                raise ValueError(f"review: support of {head!r} must be class -> count")

    def head(self, head: str) -> Mapping[str, float]:
        """{class: threshold} of ``head`` ("gender" or "product")."""
        if head == GENDER:
            return self.gender
        if head == PRODUCT:
            return self.product
        raise ValueError(f"unknown head {head!r}; one of {HEADS}")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types, as stored in the artifact's review.json."""
        return {
            "target_precision": float(self.target_precision),
            "fitted_on": self.fitted_on,
            "min_predictions": self.min_predictions,
            PRODUCT: {k: float(v) for k, v in self.product.items()},
            GENDER: {k: float(v) for k, v in self.gender.items()},
            "pooled": {k: float(v) for k, v in self.pooled.items()},
            "support": {h: {k: int(n) for k, n in c.items()} for h, c in self.support.items()},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ReviewThresholds:
        """The inverse of :meth:`to_dict` (only the target and the two heads' thresholds
        are required); ValueError names what is malformed."""
        if not isinstance(data, Mapping):
            raise ValueError("review: expected an object")
        for key in ("target_precision", PRODUCT, GENDER):
            if key not in data:
                raise ValueError(f"review: no {key!r}")
        for key in (PRODUCT, GENDER, "pooled", "support"):
            if not isinstance(data.get(key, {}), Mapping):
                raise ValueError(f"review: {key!r} must be an object")
        return cls(
            target_precision=data["target_precision"],
            product=dict(data[PRODUCT]),
            gender=dict(data[GENDER]),
            fitted_on=str(data.get("fitted_on") or ""),
            min_predictions=data.get("min_predictions", MIN_PREDICTIONS),
            pooled=dict(data.get("pooled", {})),
            support={h: dict(c) for h, c in data.get("support", {}).items()},
        )


def precision_threshold(
    confidence: np.ndarray, correct: np.ndarray, target: float = TARGET_PRECISION
) -> float:
    """The smallest ``t`` such that the predictions with ``confidence >= t`` are right at
    least ``target`` of the time: 0.0 when all of them are, ABOVE_ANY when none is."""
    conf = np.asarray(confidence, dtype=np.float64)
    right = np.asarray(correct, dtype=bool)
    if conf.ndim != 1 or right.shape != conf.shape:
        raise ValueError(f"confidence {conf.shape} and correct {right.shape} must be (N,)")
    if conf.shape[0] == 0:
        return ABOVE_ANY
    order = np.argsort(-conf, kind="stable")
    conf, right = conf[order], right[order]
    # The candidates are the distinct confidences; t = c keeps every prediction >= c,
    # that is up to the last of the (descending) run of c's.
    last = np.r_[conf[1:] != conf[:-1], True]
    kept = np.arange(1, conf.shape[0] + 1)[last]
    precision = np.cumsum(right)[last] / kept
    # A small tolerance, so that 19 right of 20 counts as 0.95.
    ok = np.flatnonzero(precision >= target - 1e-12)
    if ok.size == 0:
        return ABOVE_ANY
    if ok[-1] == kept.shape[0] - 1:  # all of them: no t needed
        return 0.0
    return float(conf[last][ok[-1]])


def fit_review_thresholds(
    gender_scores: np.ndarray,
    gender_true: np.ndarray,
    product_scores: np.ndarray,
    product_true: np.ndarray,
    *,
    gender_labels: Sequence[str],
    product_labels: Sequence[str],
    target_precision: float = TARGET_PRECISION,
    min_predictions: int = MIN_PREDICTIONS,
    fitted_on: str = "",
) -> ReviewThresholds:
    """Thresholds of every class of both heads from (N, classes) calibrated scores and
    the true class indices (see the module doc for the rule and its fallback)."""
    fitted: dict[str, dict[str, float]] = {}
    pooled: dict[str, float] = {}
    support: dict[str, dict[str, int]] = {}
    for head, scores, true, labels in (
        (GENDER, gender_scores, gender_true, gender_labels),
        (PRODUCT, product_scores, product_true, product_labels),
    ):
        predicted, confidence = tag_confidence(head, scores, labels)
        true = np.asarray(true)
        if true.shape != predicted.shape:
            raise ValueError(f"{head}: {true.shape[0]} true classes for {predicted.shape[0]} rows")
        if predicted.shape[0] == 0:
            raise ValueError(f"{head}: no predictions to fit review thresholds on")
        correct = predicted == true
        pooled[head] = precision_threshold(confidence, correct, target_precision)
        fitted[head], support[head] = {}, {}
        for i, label in enumerate(labels):
            mine = predicted == i
            support[head][label] = int(mine.sum())
            fitted[head][label] = (
                precision_threshold(confidence[mine], correct[mine], target_precision)
                if mine.sum() >= min_predictions
                else pooled[head]
            )
    return ReviewThresholds(
        target_precision=target_precision,
        product=fitted[PRODUCT],
        gender=fitted[GENDER],
        fitted_on=fitted_on,
        min_predictions=min_predictions,
        pooled=pooled,
        support=support,
    )


def tag_confidence(
    head: str, scores: np.ndarray, labels: Sequence[str]
) -> tuple[np.ndarray, np.ndarray]:
    """(predicted class index, confidence) per row of (N, classes) scores, as a tag
    stores them: rounded to six decimals; the confidence is the product margin (of the
    rounded scores, rounded again) or the gender score."""
    s = np.round(as_matrix(scores), DECIMALS)
    if s.shape[1] != len(labels):
        raise ValueError(f"{head} scores {s.shape} do not match {len(labels)} labels")
    predicted = s.argmax(axis=1)
    if head == PRODUCT:
        return predicted, np.round(top_two_margin(s), DECIMALS)
    if head == GENDER:
        return predicted, s[np.arange(s.shape[0]), predicted]
    raise ValueError(f"unknown head {head!r}; one of {HEADS}")


def needs_review(
    review: ReviewThresholds,
    gender_scores: np.ndarray,
    product_scores: np.ndarray,
    *,
    gender_labels: Sequence[str],
    product_labels: Sequence[str],
) -> np.ndarray:
    """Per row of calibrated scores, whether its tag needs review: its product margin is
    below its product type's threshold, or its gender score below its gender's."""
    gender = head_needs_review(review, GENDER, gender_scores, gender_labels)
    product = head_needs_review(review, PRODUCT, product_scores, product_labels)
    if gender.shape != product.shape:
        raise ValueError(f"{gender.shape[0]} gender rows but {product.shape[0]} product rows")
    return gender | product


def head_needs_review(
    review: ReviewThresholds, head: str, scores: np.ndarray, labels: Sequence[str]
) -> np.ndarray:
    """Per row of one head's calibrated scores, whether its confidence is below its
    class's threshold (a class without one: never)."""
    predicted, confidence = tag_confidence(head, scores, labels)
    thresholds = review.head(head)
    per_class = np.array([thresholds.get(label, -np.inf) for label in labels])
    return confidence < per_class[predicted]


def _check_thresholds(thresholds: Any, where: str) -> None:
    if not isinstance(thresholds, Mapping):
        raise ValueError(f"review: {where!r} must be an object of class -> threshold")
    for label, t in thresholds.items():
        if not isinstance(label, str) or not label:
            raise ValueError(f"review: {where!r} has a class name that is not a string")
        if not _is_number(t) or not 0 <= t <= ABOVE_ANY:
            raise ValueError(
                f"review: threshold of {where} {label!r} must be in [0, {ABOVE_ANY}], got {t!r}"
            )


def _is_number(value: Any) -> bool:
    number = isinstance(value, int | float) and not isinstance(value, bool)
    return number and bool(np.isfinite(value))
