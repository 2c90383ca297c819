"""Pure scoring: model probabilities -> Predictions (no TensorFlow)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tagger.scoring import Prediction, to_predictions

GENDERS = ["MEN", "WOMEN"]
PRODUCTS = ["Dresses", "Pants", "Shorts"]


def _predict(gender, product) -> list[Prediction]:
    return to_predictions(
        np.asarray(gender, dtype=np.float32),
        np.asarray(product, dtype=np.float32),
        gender_labels=GENDERS,
        product_labels=PRODUCTS,
    )


def test_one_prediction_per_row_with_argmax_labels():
    """Each row becomes one Prediction whose tag is the most probable class of each head."""
    preds = _predict([[0.9, 0.2], [0.1, 0.7]], [[0.1, 0.8, 0.3], [0.6, 0.2, 0.1]])
    assert [(p.gender, p.product_type) for p in preds] == [("MEN", "Pants"), ("WOMEN", "Dresses")]
    assert preds[0].gender_score == pytest.approx(0.9)
    assert preds[1].product_score == pytest.approx(0.6)


def test_scores_hold_every_class_as_rounded_python_floats():
    """All class probabilities are kept, as plain floats rounded to 6 decimals."""
    (pred,) = _predict([[0.123456789, 0.5]], [[0.1, 0.2, 0.333333333]])
    assert pred.scores == {
        "gender": {"MEN": 0.123457, "WOMEN": 0.5},
        "product": {"Dresses": 0.1, "Pants": 0.2, "Shorts": 0.333333},
    }
    values = [pred.gender_score, pred.product_score, *pred.scores["product"].values()]
    assert all(type(v) is float for v in values)
    assert pred.product_score == pred.scores["product"]["Shorts"]
    json.dumps(pred.scores)  # JSON-serialisable as stored in JSONB


def test_float32_inputs_round_to_clean_values():
    """float32 noise does not leak into the stored numbers (0.1 stays 0.1)."""
    (pred,) = _predict([[0.1, 0.9]], [[0.1, 0.2, 0.7]])
    assert pred.scores["gender"]["MEN"] == 0.1
    assert pred.gender_score == 0.9


def test_empty_batch_gives_no_predictions():
    """Zero rows in, zero Predictions out."""
    assert _predict(np.zeros((0, 2)), np.zeros((0, 3))) == []


def test_prediction_is_frozen():
    """A Prediction cannot be modified after it is made."""
    (pred,) = _predict([[0.9, 0.1]], [[0.1, 0.8, 0.3]])
    with pytest.raises(AttributeError):
        pred.gender = "WOMEN"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("gender", "product", "message"),
    [
        ([[0.5, 0.5, 0.5]], [[0.1, 0.2, 0.3]], "gender probabilities have shape"),
        ([[0.5, 0.5]], [[0.1, 0.2]], "product probabilities have shape"),
        ([0.5, 0.5], [[0.1, 0.2, 0.3]], "gender probabilities have shape"),
        ([[0.5, 0.5], [0.5, 0.5]], [[0.1, 0.2, 0.3]], "rows"),
        ([[np.nan, 0.5]], [[0.1, 0.2, 0.3]], "NaN"),
    ],
)
def test_inconsistent_input_is_refused(gender, product, message):
    """Shape mismatches and NaN probabilities raise ValueError instead of wrong tags."""
    with pytest.raises(ValueError, match=message):
        _predict(gender, product)


def test_duplicate_labels_are_refused():
    """Duplicate label names would silently merge scores, so they are refused."""
    with pytest.raises(ValueError, match="unique"):
        to_predictions(
            np.ones((1, 2)), np.ones((1, 3)), gender_labels=["A", "A"], product_labels=PRODUCTS
        )


def test_product_margin_is_top_two_difference_of_the_stored_scores():
    """product_margin is the best minus the second-best product score as stored."""
    preds = _predict([[0.9, 0.2], [0.1, 0.7]], [[0.1, 0.8, 0.3], [0.6, 0.6, 0.1]])
    assert [p.product_margin for p in preds] == [0.5, 0.0]
    stored = sorted(preds[0].scores["product"].values(), reverse=True)
    assert preds[0].product_margin == round(stored[0] - stored[1], 6)


def test_calibrated_scores_replace_the_raw_ones():
    """With a calibration, the tag's score, every class score and the margin are calibrated."""
    from tagger.calibration import Calibration, HeadCalibration, transform

    calibration = Calibration(
        "softmax_temperature",
        {"gender": HeadCalibration(temperature=2.0), "product": HeadCalibration(temperature=3.0)},
    )
    gender = np.array([[0.999, 0.2]], np.float32)
    product = np.array([[1.0, 1.0, 0.1]], np.float32)  # two saturated sigmoids
    (raw,) = _predict(gender, product)
    (pred,) = to_predictions(
        gender, product, gender_labels=GENDERS, product_labels=PRODUCTS, calibration=calibration
    )
    assert (pred.gender, pred.product_type) == (raw.gender, raw.product_type)
    expected = np.round(transform("softmax_temperature", gender, 2.0), 6)[0]
    assert list(pred.scores["gender"].values()) == expected.tolist()
    assert pred.gender_score == expected[0]
    assert sum(pred.scores["gender"].values()) == pytest.approx(1.0, abs=2e-6)
    assert pred.scores["product"]["Dresses"] == pred.scores["product"]["Pants"] < 0.5
    assert pred.product_score == pred.scores["product"]["Dresses"]
    assert (raw.product_margin, pred.product_margin) == (0.0, 0.0)
    assert all(type(v) is float for v in [*pred.scores["product"].values(), pred.product_margin])


def test_no_calibration_is_the_raw_scores():
    """calibration=None (the default) gives exactly the uncalibrated Predictions."""
    gender, product = [[0.9, 0.2]], [[0.1, 0.8, 0.3]]
    (plain,) = _predict(gender, product)
    (none,) = to_predictions(
        np.asarray(gender),
        np.asarray(product),
        gender_labels=GENDERS,
        product_labels=PRODUCTS,
        calibration=None,
    )
    assert none == plain and plain.product_score == 0.8


def test_rows_without_a_caption_are_calibrated_with_their_own_temperature():
    """captioned=False rows use the calibration's uncaptioned parameters."""
    from tagger.calibration import Calibration, HeadCalibration

    calibration = Calibration(
        "softmax_temperature",
        {"product": HeadCalibration(temperature=1.0)},
        uncaptioned={"product": HeadCalibration(temperature=5.0)},
    )
    product = np.array([[0.9, 0.3, 0.1]] * 2)
    with_caption, without = to_predictions(
        np.array([[0.9, 0.1]] * 2),
        product,
        gender_labels=GENDERS,
        product_labels=PRODUCTS,
        calibration=calibration,
        captioned=[True, False],
    )
    assert with_caption.product_type == without.product_type == "Dresses"
    assert without.product_score < with_caption.product_score
    assert with_caption.gender_score == 0.9  # no gender parameters: raw
    with pytest.raises(ValueError, match="captioned"):
        to_predictions(
            np.array([[0.9, 0.1]]), product[:1], gender_labels=GENDERS,
            product_labels=PRODUCTS, calibration=calibration, captioned=[True, False],
        )  # fmt: skip
