"""train.metrics: every figure against values counted by hand (pure numpy)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from train.metrics import (
    binary_accuracy,
    confusion_matrix,
    evaluate,
    macro_f1,
    multilabel_auc,
    one_hot,
    per_class_report,
    roc_auc,
    top1_accuracy,
)

# Four items, three classes. Truth: 0, 1, 2, 2. Argmax predictions: 0, 2, 2, 1.
TRUE = np.array([0, 1, 2, 2])
PROBS = np.array(
    [
        [0.9, 0.2, 0.1],
        [0.3, 0.4, 0.6],
        [0.1, 0.2, 0.7],
        [0.2, 0.8, 0.3],
    ]
)


def test_one_hot():
    """Indices become one-hot rows."""
    assert one_hot([2, 0], 3).tolist() == [[0, 0, 1], [1, 0, 0]]


def test_binary_accuracy_counts_cells_like_keras():
    """Binary accuracy is the share of the N*C cells where p > 0.5 matches the target."""
    # Cells above 0.5: (0,0) (1,2) (2,2) (3,1). Targets: (0,0) (1,1) (2,2) (3,2).
    # Wrong cells: (1,1) target 1 p .4; (1,2) target 0 p .6; (3,1) 0 vs .8; (3,2) 1 vs .3.
    assert binary_accuracy(one_hot(TRUE, 3), PROBS) == pytest.approx(8 / 12)
    assert binary_accuracy(np.array([[1.0]]), np.array([[0.5]])) == 0.0  # strictly above


def test_top1_accuracy():
    """Top-1 accuracy: the argmax is the true class for 2 of 4 items."""
    assert top1_accuracy(TRUE, PROBS) == 0.5


def test_roc_auc_hand_counted():
    """AUC is the share of (positive, negative) pairs ranked right, ties count a half."""
    # Positives .35, .8; negatives .1, .4: pairs right: (.35>.1), (.8>.1), (.8>.4) = 3/4.
    assert roc_auc(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8])) == 0.75
    assert roc_auc(np.array([0, 1]), np.array([0.5, 0.5])) == 0.5
    assert roc_auc(np.array([1, 0, 1]), np.array([0.3, 0.3, 0.9])) == 0.75
    assert math.isnan(roc_auc(np.array([1, 1]), np.array([0.2, 0.9])))


def test_multilabel_auc_is_mean_of_classes_with_both_kinds():
    """Multi-label AUC averages per-class AUCs, leaving out classes without a positive."""
    y = one_hot(TRUE, 3)
    mean, per_class = multilabel_auc(y, PROBS)
    # class 0: positive .9 vs .3 .1 .2 -> 1. class 1: positive .4 vs .2 .2 .8 -> 2/3.
    # class 2: positives .7 .3 vs negatives .1 .6: .7>.1 .7>.6 .3>.1 right, .3<.6 -> 3/4.
    assert per_class == pytest.approx([1.0, 2 / 3, 0.75])
    assert mean == pytest.approx((1 + 2 / 3 + 0.75) / 3)
    mean, per_class = multilabel_auc(one_hot([0, 0], 2), np.array([[0.6, 0.1], [0.4, 0.2]]))
    assert math.isnan(per_class[0]) and math.isnan(per_class[1]) and math.isnan(mean)


def test_confusion_matrix_rows_are_truth():
    """cm[i, j] counts items of true class i predicted as j."""
    cm = confusion_matrix(TRUE, PROBS.argmax(axis=1), 3)
    assert cm.tolist() == [[1, 0, 0], [0, 0, 1], [0, 1, 1]]


def test_per_class_report_and_macro_f1():
    """Precision, recall, F1 and support per class; macro F1 is their plain mean."""
    cm = confusion_matrix(TRUE, PROBS.argmax(axis=1), 3)
    report = per_class_report(cm, ["a", "b", "c"])
    assert report["a"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 1}
    assert report["b"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert report["c"]["precision"] == 0.5 and report["c"]["recall"] == 0.5
    assert report["c"]["f1"] == 0.5 and report["c"]["support"] == 2
    assert macro_f1(cm) == pytest.approx(0.5)


def test_macro_f1_ignores_classes_never_seen():
    """A class neither true nor predicted does not drag macro F1 down."""
    cm = np.array([[2, 0, 0], [0, 1, 0], [0, 0, 0]])
    assert macro_f1(cm) == 1.0


def test_evaluate_headline_keys():
    """evaluate() gives the headline figures of both heads and their details."""
    gender_probs = np.array([[0.8, 0.3], [0.4, 0.7], [0.6, 0.2], [0.1, 0.9]])
    out = evaluate(
        gender_true=np.array([0, 1, 1, 1]),
        gender_probs=gender_probs,
        product_true=TRUE,
        product_probs=PROBS,
        gender_labels=["MEN", "WOMEN"],
        product_labels=["a", "b", "c"],
    )
    assert out["items"] == 4
    assert out["gender_accuracy"] == 0.75
    assert out["gender_binary_accuracy"] == pytest.approx(6 / 8)
    assert out["product_top1"] == 0.5
    assert out["product_macro_f1"] == pytest.approx(0.5)
    assert out["product"]["confusion_matrix"] == [[1, 0, 0], [0, 0, 1], [0, 1, 1]]
    assert out["gender"]["per_class"]["WOMEN"]["support"] == 3
    assert out["product"]["per_class"]["a"]["auc"] == 1.0


def test_shape_mismatch_is_refused():
    """Probabilities that do not match the labels are an error, not a silent figure."""
    with pytest.raises(ValueError):
        binary_accuracy(np.zeros((2, 3)), np.zeros((2, 2)))
    with pytest.raises(ValueError):
        evaluate(
            gender_true=np.array([0]),
            gender_probs=np.zeros((1, 3)),
            product_true=np.array([0]),
            product_probs=np.zeros((1, 2)),
            gender_labels=["MEN", "WOMEN"],
            product_labels=["a", "b"],
        )


@pytest.mark.slow
def test_auc_matches_keras_multi_label_auc():
    """The exact multi-label AUC agrees with keras.metrics.AUC(multi_label=True)."""
    import keras

    rng = np.random.default_rng(0)
    truth = rng.integers(0, 4, 200)
    probs = np.clip(one_hot(truth, 4) * 0.3 + rng.uniform(0, 0.7, (200, 4)), 0, 1)
    metric = keras.metrics.AUC(multi_label=True, num_thresholds=1000)
    metric.update_state(one_hot(truth, 4), probs.astype("float32"))
    mine, _ = multilabel_auc(one_hot(truth, 4), probs)
    assert mine == pytest.approx(float(metric.result()), abs=2e-3)
