"""Evaluation figures: pure numpy, no TensorFlow (so they are tested against hand counts).

Inputs are class indices for the truth and (N, C) probabilities from the sigmoid heads.
The figures follow the reference notebook and the service:

* ``binary_accuracy``: Keras's ``BinaryAccuracy`` on the one-hot targets, i.e. the share of
  all N*C cells where ``p > 0.5`` matches the 0/1 target (what the notebook reported for
  the gender head);
* ``accuracy`` / ``top1``: the argmax class is the true class (what the service tags);
* ``auc``: Keras's ``AUC(multi_label=True)``: the ROC AUC of each class on its own,
  averaged over the classes. Computed exactly (rank statistic with ties) rather than with
  Keras's 200 interpolated thresholds, so it can differ from Keras in the third decimal;
  classes with no positive or no negative example are left out of the mean (Keras would
  count them as 0);
* per-class precision / recall / F1 / support and ``macro_f1`` on the argmax predictions,
  over the classes that occur in the truth or the predictions (as scikit-learn's default),
  with 0 where a ratio has no denominator;
* the confusion matrix: rows are true classes, columns predicted ones.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def one_hot(indices: Sequence[int] | np.ndarray, n_classes: int) -> np.ndarray:
    """(N,) class indices -> (N, C) float32 one-hot rows."""
    idx = np.asarray(indices, dtype=np.int64)
    out = np.zeros((idx.shape[0], n_classes), dtype=np.float32)
    out[np.arange(idx.shape[0]), idx] = 1.0
    return out


def binary_accuracy(y_true: np.ndarray, probs: np.ndarray, threshold: float = 0.5) -> float:
    """Share of cells where ``probs > threshold`` equals the 0/1 target (Keras semantics)."""
    y_true, probs = np.asarray(y_true), np.asarray(probs)
    _same_shape(y_true, probs)
    return float(np.mean((probs > threshold) == (y_true > 0.5)))


def top1_accuracy(true_idx: np.ndarray, probs: np.ndarray) -> float:
    """Share of rows whose most probable class is the true one."""
    true_idx, probs = np.asarray(true_idx), np.asarray(probs)
    if probs.ndim != 2 or probs.shape[0] != true_idx.shape[0]:
        raise ValueError(f"probs {probs.shape} do not match {true_idx.shape[0]} labels")
    if true_idx.shape[0] == 0:
        return float("nan")
    return float(np.mean(np.argmax(probs, axis=1) == true_idx))


def roc_auc(y_true: np.ndarray, scores: np.ndarray) -> float:
    """Exact ROC AUC of one binary problem: P(score of a positive > score of a negative),
    ties counting one half. NaN when there is no positive or no negative example."""
    y = np.asarray(y_true).astype(bool).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    _same_shape(y, s)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = _average_ranks(s)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def multilabel_auc(y_true: np.ndarray, probs: np.ndarray) -> tuple[float, list[float]]:
    """(mean over classes, per-class list) of the one-vs-rest ROC AUC; see module doc."""
    y_true, probs = np.asarray(y_true), np.asarray(probs)
    _same_shape(y_true, probs)
    per_class = [roc_auc(y_true[:, c], probs[:, c]) for c in range(y_true.shape[1])]
    defined = [a for a in per_class if not np.isnan(a)]
    return (float(np.mean(defined)) if defined else float("nan")), per_class


def confusion_matrix(true_idx: np.ndarray, pred_idx: np.ndarray, n_classes: int) -> np.ndarray:
    """(C, C) int counts; ``cm[i, j]`` = items of true class i predicted as j."""
    true_idx, pred_idx = np.asarray(true_idx, np.int64), np.asarray(pred_idx, np.int64)
    _same_shape(true_idx, pred_idx)
    cm = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(cm, (true_idx, pred_idx), 1)
    return cm


def per_class_report(cm: np.ndarray, labels: Sequence[str]) -> dict[str, dict[str, float]]:
    """{label: precision, recall, f1, support} from a confusion matrix."""
    cm = np.asarray(cm)
    tp = np.diag(cm).astype(np.float64)
    predicted, support = cm.sum(axis=0), cm.sum(axis=1)
    precision = _ratio(tp, predicted)
    recall = _ratio(tp, support)
    f1 = _ratio(2 * precision * recall, precision + recall)
    return {
        label: {
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "f1": float(f1[i]),
            "support": int(support[i]),
        }
        for i, label in enumerate(labels)
    }


def macro_f1(cm: np.ndarray) -> float:
    """Unweighted mean F1 over the classes seen in the truth or the predictions."""
    cm = np.asarray(cm)
    report = per_class_report(cm, [str(i) for i in range(cm.shape[0])])
    seen = (cm.sum(axis=0) + cm.sum(axis=1)) > 0
    f1 = np.array([report[str(i)]["f1"] for i in range(cm.shape[0])])
    return float(f1[seen].mean()) if seen.any() else float("nan")


def head_metrics(true_idx: np.ndarray, probs: np.ndarray, labels: Sequence[str]) -> dict[str, Any]:
    """Every figure for one head (gender or product)."""
    true_idx, probs = np.asarray(true_idx, np.int64), np.asarray(probs, np.float64)
    if probs.shape != (true_idx.shape[0], len(labels)):
        raise ValueError(f"probs {probs.shape} do not match {true_idx.shape[0]} x {len(labels)}")
    cm = confusion_matrix(true_idx, np.argmax(probs, axis=1), len(labels))
    auc, auc_per_class = multilabel_auc(one_hot(true_idx, len(labels)), probs)
    report = per_class_report(cm, labels)
    for label, a in zip(labels, auc_per_class, strict=True):
        report[label]["auc"] = None if np.isnan(a) else a
    return {
        "items": int(true_idx.shape[0]),
        "top1": top1_accuracy(true_idx, probs),
        "binary_accuracy": binary_accuracy(one_hot(true_idx, len(labels)), probs),
        "auc": None if np.isnan(auc) else auc,
        "macro_f1": macro_f1(cm),
        "labels": list(labels),
        "per_class": report,
        "confusion_matrix": cm.tolist(),
    }


def evaluate(
    *,
    gender_true: np.ndarray,
    gender_probs: np.ndarray,
    product_true: np.ndarray,
    product_probs: np.ndarray,
    gender_labels: Sequence[str],
    product_labels: Sequence[str],
) -> dict[str, Any]:
    """All figures of one evaluation: ``{"gender": {...}, "product": {...}, headline keys}``.

    Headline keys: ``gender_accuracy`` (argmax), ``gender_binary_accuracy`` (Keras),
    ``product_top1``, ``product_auc``, ``product_macro_f1``.
    """
    gender = head_metrics(gender_true, gender_probs, gender_labels)
    product = head_metrics(product_true, product_probs, product_labels)
    return {
        "items": gender["items"],
        "gender_accuracy": gender["top1"],
        "gender_binary_accuracy": gender["binary_accuracy"],
        "product_top1": product["top1"],
        "product_auc": product["auc"],
        "product_macro_f1": product["macro_f1"],
        "gender": gender,
        "product": product,
    }


HEADLINE = (
    "gender_accuracy",
    "gender_binary_accuracy",
    "product_top1",
    "product_auc",
    "product_macro_f1",
)


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks with ties given their average rank."""
    order = np.argsort(values, kind="mergesort")
    ranks = np.empty(len(values), dtype=np.float64)
    sorted_vals = values[order]
    # Boundaries of runs of equal values.
    starts = np.flatnonzero(np.r_[True, sorted_vals[1:] != sorted_vals[:-1]])
    ends = np.r_[starts[1:], len(values)]
    for start, end in zip(starts, ends, strict=True):
        ranks[order[start:end]] = (start + 1 + end) / 2
    return ranks


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    num, den = np.asarray(num, np.float64), np.asarray(den, np.float64)
    out = np.zeros_like(num)
    np.divide(num, den, out=out, where=den > 0)
    return out


def _same_shape(a: np.ndarray, b: np.ndarray) -> None:
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {a.shape} vs {b.shape}")
