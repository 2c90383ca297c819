"""tagger.review: per-class review thresholds, fitted and applied (pure numpy)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tagger.review import (
    ABOVE_ANY,
    ReviewThresholds,
    fit_review_thresholds,
    needs_review,
    precision_threshold,
    tag_confidence,
)

GENDERS = ["MEN", "WOMEN"]
PRODUCTS = ["Dresses", "Pants", "Shirts"]


def test_threshold_is_the_smallest_that_reaches_the_precision():
    """Of 10 predictions, the two least confident wrong: 0.95 needs t = 0.3 (8 of 8)."""
    conf = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.45, 0.4, 0.3, 0.2, 0.1])
    right = np.array([1, 1, 1, 1, 1, 1, 1, 1, 0, 0], bool)
    assert precision_threshold(conf, right, 0.95) == pytest.approx(0.3)
    # 8 of 9 (0.89) is enough for 0.85, so 0.2 is; all 10 (0.8) for 0.8: no threshold
    assert precision_threshold(conf, right, 0.85) == pytest.approx(0.2)
    assert precision_threshold(conf, right, 0.8) == 0.0


def test_threshold_is_the_smallest_not_the_first_from_the_top():
    """20 predictions with the 3rd most confident wrong: all 20 (19 right) reach 0.95;
    for 0.96 only the two above the mistake do, so t is the 2nd highest confidence."""
    conf = np.linspace(1.0, 0.05, 20)
    right = np.ones(20, bool)
    right[2] = False
    assert precision_threshold(conf, right, 0.95) == 0.0
    assert precision_threshold(conf, right, 0.96) == pytest.approx(0.95)


def test_ties_are_kept_or_dropped_together():
    """Predictions of equal confidence are all above a threshold or all below it."""
    conf = np.array([0.9, 0.5, 0.5, 0.5, 0.1])
    right = np.array([1, 1, 0, 1, 0], bool)
    # t = 0.5 keeps 4 (3 right: 0.75), never 2 or 3 of the 0.5s; all 5 are 0.6
    assert precision_threshold(conf, right, 0.9) == pytest.approx(0.9)
    assert precision_threshold(conf, right, 0.75) == pytest.approx(0.5)
    assert precision_threshold(conf, right, 0.6) == 0.0


def test_all_wrong_or_nothing_means_review_everything():
    """No threshold reaches the precision (or there are no predictions): ABOVE_ANY."""
    assert precision_threshold(np.array([1.0, 0.7]), np.array([False, True])) == ABOVE_ANY
    assert precision_threshold(np.array([]), np.array([], bool)) == ABOVE_ANY
    assert ABOVE_ANY > 1.0


def _scores(rng, n: int, classes: int, truth: np.ndarray, sharp: float) -> np.ndarray:
    """Softmax scores whose top class is the truth more often the sharper they are."""
    z = rng.normal(0.0, 1.0, (n, classes))
    z[np.arange(n), truth] += sharp * rng.random(n)
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_fit_matches_the_rule_per_class_and_falls_back_when_few():
    """Each class with enough predictions gets its own threshold (the rule on its
    predictions' margins), a rarely predicted one the head's pooled threshold."""
    rng = np.random.default_rng(0)
    n = 600
    p_true = rng.choice(3, n, p=[0.495, 0.495, 0.01])
    g_true = rng.integers(0, 2, n)
    product = _scores(rng, n, 3, p_true, 4.0)
    product[p_true != 2, 2] *= 0.01  # Shirts is predicted (almost) only where it is true
    product /= product.sum(axis=1, keepdims=True)
    gender = _scores(rng, n, 2, g_true, 5.0)
    review = fit_review_thresholds(
        gender, g_true, product, p_true, gender_labels=GENDERS, product_labels=PRODUCTS,
        fitted_on="test",
    )  # fmt: skip
    predicted, margin = tag_confidence("product", product, PRODUCTS)
    for i, label in enumerate(PRODUCTS[:2]):
        mine = predicted == i
        assert review.support["product"][label] == mine.sum() >= 10
        want = precision_threshold(margin[mine], p_true[mine] == i, 0.95)
        assert review.product[label] == want and 0 < want < 1
    assert review.support["product"]["Shirts"] < 10
    assert review.product["Shirts"] == review.pooled["product"]
    g_pred, g_score = tag_confidence("gender", gender, GENDERS)
    assert review.gender["MEN"] == precision_threshold(
        g_score[g_pred == 0], g_true[g_pred == 0] == 0, 0.95
    )
    assert set(review.gender) == set(GENDERS) and set(review.product) == set(PRODUCTS)


def test_tags_above_their_threshold_reach_the_precision_on_the_fit_split():
    """On the split it was fitted on, the tags not flagged for review are right at least
    the target share of the time, per class with its own threshold."""
    rng = np.random.default_rng(1)
    n = 2000
    p_true, g_true = rng.integers(0, 3, n), rng.integers(0, 2, n)
    product, gender = _scores(rng, n, 3, p_true, 3.0), _scores(rng, n, 2, g_true, 3.0)
    labels = dict(gender_labels=GENDERS, product_labels=PRODUCTS)
    review = fit_review_thresholds(gender, g_true, product, p_true, **labels)
    assert 0 < needs_review(review, gender, product, **labels).mean() < 1
    for head, scores, true in (("product", product, p_true), ("gender", gender, g_true)):
        # one head's thresholds at a time, so the other head's flags do not thin the rows
        only = ReviewThresholds(0.95, **{"product": {}, "gender": {}, head: review.head(head)})
        ok = ~needs_review(only, gender, product, **labels)
        predicted = scores.argmax(axis=1)
        for i in range(scores.shape[1]):
            kept = ok & (predicted == i)
            assert kept.sum() >= 100 and np.mean(true[kept] == i) >= 0.95, (head, i)


def test_needs_review_reads_margin_for_products_and_score_for_genders():
    """A product tag is flagged by its margin, a gender tag by its score, either one
    flags the row, and a class without a threshold is never flagged."""
    review = ReviewThresholds(
        target_precision=0.95, product={"Dresses": 0.3, "Pants": 0.0}, gender={"MEN": 0.8}
    )
    product = np.array([[0.6, 0.35, 0.05], [0.7, 0.1, 0.2], [0.1, 0.5, 0.4], [0.1, 0.2, 0.7]])
    gender = np.array([[0.9, 0.1], [0.7, 0.3], [0.9, 0.1], [0.3, 0.7]])
    flags = needs_review(review, gender, product, gender_labels=GENDERS, product_labels=PRODUCTS)
    # margin 0.25 < 0.3; MEN 0.7 < 0.8; Pants margin 0.1 >= 0; Shirts and WOMEN: none
    assert flags.tolist() == [True, True, False, False]


def test_confidence_is_rounded_as_the_tags_store_it():
    """Margins are of the six-decimal scores, rounded again, like tagger.scoring's."""
    scores = np.array([[0.6000004, 0.3, 0.1]])
    _, margin = tag_confidence("product", scores, PRODUCTS)
    assert margin[0] == 0.3


def test_round_trip_through_json():
    """to_dict -> JSON -> from_dict gives equal thresholds."""
    rng = np.random.default_rng(2)
    t = rng.integers(0, 3, 100)
    review = fit_review_thresholds(
        _scores(rng, 100, 2, t % 2, 3.0), t % 2, _scores(rng, 100, 3, t, 3.0), t,
        gender_labels=GENDERS, product_labels=PRODUCTS, fitted_on="validation split",
    )  # fmt: skip
    data = json.loads(json.dumps(review.to_dict()))
    assert ReviewThresholds.from_dict(data) == review
    assert data["target_precision"] == 0.95 and data["fitted_on"] == "validation split"
    assert set(data["product"]) == set(PRODUCTS) and set(data["gender"]) == set(GENDERS)


def test_minimal_file_loads():
    """Only the target and the two heads' thresholds are needed (e.g. written by hand)."""
    review = ReviewThresholds.from_dict(
        {"target_precision": 0.9, "product": {"Dresses": 0.2}, "gender": {}}
    )
    assert review.product == {"Dresses": 0.2} and review.min_predictions == 10


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([], "object"),
        ({"product": {}, "gender": {}}, "target_precision"),
        ({"target_precision": 0.95, "gender": {}}, "'product'"),
        ({"target_precision": 1.5, "product": {}, "gender": {}}, "target_precision"),
        ({"target_precision": 0.95, "product": [], "gender": {}}, "'product'"),
        ({"target_precision": 0.95, "product": {"Dresses": -0.1}, "gender": {}}, "Dresses"),
        ({"target_precision": 0.95, "product": {"Dresses": "0.1"}, "gender": {}}, "Dresses"),
        ({"target_precision": 0.95, "product": {}, "gender": {"MEN": 2.0}}, "MEN"),
        ({"target_precision": 0.95, "product": {}, "gender": {}, "min_predictions": 0}, "min_"),
        ({"target_precision": 0.95, "product": {}, "gender": {}, "pooled": {"x": 0.1}}, "per head"),
    ],
)
def test_malformed_files_are_refused(data, message):
    """from_dict names what is wrong instead of flagging tags with nonsense."""
    with pytest.raises(ValueError, match=message):
        ReviewThresholds.from_dict(data)


def test_fit_refuses_mismatched_inputs():
    """Scores that do not match the labels or the truth are a ValueError."""
    g, p = np.full((4, 2), 0.5), np.full((4, 3), 1 / 3)
    t = np.zeros(4, np.int64)
    labels = dict(gender_labels=GENDERS, product_labels=PRODUCTS)
    with pytest.raises(ValueError, match="labels"):
        fit_review_thresholds(g, t, p[:, :2], t, **labels)
    with pytest.raises(ValueError, match="true classes"):
        fit_review_thresholds(g, t[:3], p, t, **labels)
    with pytest.raises(ValueError, match="no predictions"):
        fit_review_thresholds(g[:0], t[:0], p[:0], t[:0], **labels)
