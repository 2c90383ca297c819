"""Fitting a calibration (``tagger.calibration``): temperatures and the guard on them.

Pure numpy, like ``tagger.calibration``. Each head gets one temperature ``T``, the one
minimising the negative log-likelihood of the validation split's true classes (convex in
``1/T``: a bisection on its derivative finds it), for either method:

* ``softmax_temperature``: the likelihood of each row's true class under
  ``softmax(logit(p) / T)``;
* ``sigmoid_temperature``: of every one-vs-rest target under ``sigmoid(logit(p) / T)``.

**Smoothed targets.** The likelihood is taken against smoothed targets rather than 0/1,
as Platt (1999) did for his sigmoid: fitted on ``n`` rows, a true class counts as
``(n + a) / (n + 2a)`` and the others share the rest (the sigmoid: positives
``(n+ + a) / (n+ + 2a)``, negatives ``a / (n- + 2a)``), with ``a = PSEUDO_COUNT``, 1/2
(Jeffreys' prior). With 0/1 targets a split on which a head is never wrong has no finite
optimum (sharper is always likelier): the fit ran into its lower bound, T = 0.05, and on
200 synthetic rows never wrong stored 72% of the top scores as 1.0; smoothed, it stops
at T = 0.14 and 30% (Platt's ``a = 1``: 0.19 and 15%; tests/test_calibration.py). Where
a head does make mistakes the targets move the fit little (``a / (n + 2a)`` is 0.25% at
n = 204), but on a nearly perfect head (one mistake in 204) that is half a mistake
more, so it hedges a little more. Measured on the held-out items of six benchmark
models (benchmarks/calibration.py at seeds 1, 2 and 42, the image-only model at 42, and
the demo's settings at seeds 7 and 8; 22 heads and inputs), with the guard below: 0/1
targets left two heads worse than raw (both image-only gender heads of seed 42: 0.0144
-> 0.0179, 0.0147 -> 0.0198), ``a = 1/2`` and ``a = 1`` none; the six models' pooled
held-out ECEs summed to 0.173 (0/1), 0.178 (1/2) and 0.186 (1).

**The guard.** A temperature fitted on a split can still raise the ECE of unseen items
(the demo's fit once took its captioned product head from 0.106 to 0.265 on its 82-item
split). So each
head's temperature is cross-validated before it is used: the split is cut into
``CV_FOLDS`` folds (stratified by whether the raw top class is right, so every fold has
its share of mistakes), a temperature is fitted on all folds but one and applied to that
one, and the ECE of these out-of-fold scores, averaged over ``CV_REPEATS`` different
cuts, is compared with the raw scores' ECE on the same items (raw scores have no
parameters, so theirs needs no cross-validation). The temperature (fitted again on the
whole split) is used only if it is strictly lower; otherwise the head keeps its raw
scores (``HeadCalibration.applied`` False). The comparison is on ECE, not likelihood:
the issue asks for a lower ECE, and raw sigmoid scores are no distribution over the
classes, so their likelihood is not comparable with the softmax's.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from tagger.calibration import (
    DEFAULT_METHOD,
    METHODS,
    SIGMOID_TEMPERATURE,
    SOFTMAX_TEMPERATURE,
    Calibration,
    HeadCalibration,
    logits,
    sigmoid,
    softmax,
    transform,
)
from tagger.reliability import N_BINS, as_matrix, expected_calibration_error

#: the temperature search's range. Smoothed targets give every split a finite optimum;
#: the bounds only keep a degenerate one finite (a handful all confidently wrong, or a
#: huge split never wrong: with a / (n + 2a) tiny the optimum can be very sharp)
T_MIN, T_MAX = 0.05, 20.0
#: cross-validation of the guard: folds, and cuts into folds averaged over
CV_FOLDS = 5
CV_REPEATS = 5
#: the cuts are drawn from this seed: the same split always gives the same decision
CV_SEED = 0
#: the smoothed targets' pseudo-count ``a``: a true class counts as (n + a) / (n + 2a);
#: 1/2 is Jeffreys' prior (Platt's 1, Laplace's rule, under-rated nearly perfect heads)
PSEUDO_COUNT = 0.5


def fit_temperature(
    probs: np.ndarray,
    labels: np.ndarray,
    method: str = DEFAULT_METHOD,
    *,
    smoothed: bool = True,
) -> float:
    """The temperature in [T_MIN, T_MAX] minimising the negative log-likelihood.

    ``labels`` are class indices (N,) or, for ``sigmoid_temperature``, 0/1 targets
    (N, classes) as well. ``smoothed``: against the smoothed targets (see the module doc);
    False: against the 0/1 ones. The likelihood is convex in ``b = 1/T`` (log-sum-exp
    and softplus of a linear function of ``b``, whatever the targets), so its derivative
    only rises with ``b`` and a bisection on the sign of that derivative (in log space,
    60 steps: far below any figure worth reporting) finds the optimum or the bound it
    lies beyond.
    """
    z = logits(as_matrix(probs))
    y = _targets(labels, z.shape)
    if z.shape[0] == 0:
        raise ValueError("cannot fit a temperature on zero rows")
    if method == SOFTMAX_TEMPERATURE:
        if not np.all(y.sum(axis=1) == 1):
            raise ValueError("softmax_temperature needs exactly one true class per row")
        if smoothed and z.shape[1] > 1:
            eps = PSEUDO_COUNT / (z.shape[0] + 2 * PSEUDO_COUNT)
            y = y * (1.0 - eps) + (1.0 - y) * eps / (z.shape[1] - 1)
        z_true = (z * y).sum(axis=1)

        def slope(b: float) -> float:  # d/db mean(logsumexp(b z) - b y.z)
            return float(np.mean((softmax(b * z) * z).sum(axis=1) - z_true))
    elif method == SIGMOID_TEMPERATURE:
        if smoothed:
            a, pos = PSEUDO_COUNT, y.sum()
            y = np.where(y > 0.5, (pos + a) / (pos + 2 * a), a / (y.size - pos + 2 * a))

        def slope(b: float) -> float:  # d/db mean(softplus(b z) - y b z)
            return float(np.mean((sigmoid(b * z) - y) * z))
    else:
        raise ValueError(f"unknown calibration method {method!r}; one of {METHODS}")
    lo, hi = np.log(1.0 / T_MAX), np.log(1.0 / T_MIN)
    if slope(np.exp(lo)) >= 0:
        return T_MAX
    if slope(np.exp(hi)) <= 0:
        return T_MIN
    for _ in range(60):
        mid = (lo + hi) / 2
        if slope(np.exp(mid)) > 0:
            hi = mid
        else:
            lo = mid
    return float(1.0 / np.exp((lo + hi) / 2))


def cross_validated_ece(
    probs: np.ndarray,
    labels: np.ndarray,
    method: str = DEFAULT_METHOD,
    *,
    folds: int = CV_FOLDS,
    repeats: int = CV_REPEATS,
    bins: int = N_BINS,
    seed: int = CV_SEED,
    smoothed: bool = True,
) -> tuple[float, int] | None:
    """(ECE of out-of-fold calibrated scores, averaged over ``repeats`` cuts; the folds
    used), or None for fewer than two rows. Folds are ``min(folds, rows)``, stratified by
    whether the raw top class is right."""
    p = as_matrix(probs)
    y = np.asarray(labels)
    n = p.shape[0]
    k = min(folds, n)
    if k < 2:
        return None
    correct = p.argmax(axis=1) == y
    rng = np.random.default_rng(seed)
    eces = []
    for _ in range(repeats):
        fold = _stratified_folds(correct, k, rng)
        out = np.empty_like(p)
        for f in range(k):
            held = fold == f
            t = fit_temperature(p[~held], y[~held], method, smoothed=smoothed)
            out[held] = transform(method, p[held], t)
        eces.append(expected_calibration_error(out, y, bins=bins))
    return float(np.mean(eces)), k


def fit_head(
    probs: np.ndarray,
    labels: np.ndarray,
    method: str = DEFAULT_METHOD,
    *,
    bins: int = N_BINS,
    guard: bool = True,
    smoothed: bool = True,
) -> HeadCalibration:
    """One head's temperature on (raw probs (N, classes), class indices (N,)), applied
    only if its cross-validated ECE is below the raw scores' (``guard``; False: always
    applied, as before the guard), with the figures it was chosen on. ``smoothed``:
    :func:`fit_temperature`'s (False, with ``guard`` False: the fit before either)."""
    labels = np.asarray(labels)
    t = fit_temperature(probs, labels, method, smoothed=smoothed)
    before = expected_calibration_error(probs, labels, bins=bins)
    calibrated = expected_calibration_error(transform(method, probs, t), labels, bins=bins)
    cv = None
    if guard:
        cv = cross_validated_ece(probs, labels, method, bins=bins, smoothed=smoothed)
    applied = not guard or (cv is not None and cv[0] < before)
    return HeadCalibration(
        temperature=t,
        ece_before=before,
        ece_after=calibrated if applied else before,
        items=int(labels.shape[0]),
        applied=applied,
        ece_cv=None if cv is None else cv[0],
        folds=None if cv is None else cv[1],
    )


def fit_calibration(
    heads: Mapping[str, tuple[np.ndarray, np.ndarray]],
    *,
    uncaptioned: Mapping[str, tuple[np.ndarray, np.ndarray]] | None = None,
    method: str = DEFAULT_METHOD,
    bins: int = N_BINS,
    fitted_on: str = "",
    guard: bool = True,
    smoothed: bool = True,
) -> Calibration:
    """:func:`fit_head` per head on {head: (raw probs (N, classes), class indices (N,))}
    (and, for a text model, on the same split fed no captions: ``uncaptioned``)."""

    def fit_heads(data: Mapping[str, tuple[np.ndarray, np.ndarray]]) -> dict[str, HeadCalibration]:
        return {
            head: fit_head(probs, labels, method, bins=bins, guard=guard, smoothed=smoothed)
            for head, (probs, labels) in data.items()
        }

    return Calibration(
        method=method,
        heads=fit_heads(heads),
        uncaptioned=fit_heads(uncaptioned or {}),
        bins=bins,
        fitted_on=fitted_on,
    )


def _stratified_folds(correct: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """A fold index per row: the right rows and then the wrong ones, each shuffled, dealt
    round-robin, so that folds differ in size by at most one and share the mistakes."""
    fold = np.empty(correct.shape[0], dtype=np.int64)
    dealt = 0
    for group in (np.flatnonzero(correct), np.flatnonzero(~correct)):
        rng.shuffle(group)
        fold[group] = (dealt + np.arange(group.shape[0])) % k
        dealt += group.shape[0]
    return fold


def _targets(labels: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    y = np.asarray(labels)
    if y.shape == (shape[0],):
        if y.size and (y.min() < 0 or y.max() >= shape[1]):
            raise ValueError(f"class indices must be in [0, {shape[1]})")
        return np.eye(shape[1])[y.astype(np.int64)]
    if y.shape == shape:
        return y.astype(np.float64)
    raise ValueError(f"labels have shape {y.shape}, expected ({shape[0]},) or {shape}")
