"""tagger.calibration: temperature scaling, ECE, reliability data, margins (pure numpy)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tagger.calibration import (
    METHODS,
    SIGMOID_TEMPERATURE,
    SOFTMAX_TEMPERATURE,
    Calibration,
    HeadCalibration,
    apply_calibration,
    expected_calibration_error,
    reliability,
    sigmoid,
    softmax,
    top_two_margin,
    transform,
)
from tagger.calibration_fit import (
    PSEUDO_COUNT,
    T_MAX,
    T_MIN,
    _stratified_folds,
    cross_validated_ece,
    fit_calibration,
    fit_head,
    fit_temperature,
)


def _softmax_set(n: int, classes: int, temperature: float, seed: int):
    """Raw sigmoid scores of logits z, and labels drawn from softmax(z / temperature)."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0.0, 4.0, (n, classes))
    p_true = softmax(z / temperature)
    labels = (rng.random((n, 1)) > p_true.cumsum(axis=1)).sum(axis=1)
    return sigmoid(z), np.minimum(labels, classes - 1)


def test_perfectly_calibrated_scores_have_near_zero_ece():
    """Top scores that are right exactly as often as they say give an ECE of about 0."""
    rng = np.random.default_rng(0)
    n = 200_000
    conf = rng.uniform(0.5, 1.0, n)
    correct = rng.random(n) < conf
    scores = np.stack([conf, 1.0 - conf], axis=1)
    labels = np.where(correct, 0, 1)
    assert expected_calibration_error(scores, labels) < 0.01


def test_ece_of_an_always_sure_always_half_right_model_is_one_half():
    """Confidence 1.0 everywhere with half the tags right is an ECE of 0.5."""
    scores = np.array([[1.0, 0.0]] * 10)
    labels = np.array([0, 1] * 5)
    assert expected_calibration_error(scores, labels) == pytest.approx(0.5)


def test_overconfident_set_ece_drops_after_fitting():
    """Scores sharpened far beyond their accuracy are much better calibrated after fitting."""
    probs, labels = _softmax_set(5_000, 5, temperature=3.0, seed=1)
    held_probs, held_labels = _softmax_set(20_000, 5, temperature=3.0, seed=2)
    for method in METHODS:
        cal = fit_calibration({"product": (probs, labels)}, method=method)
        head = cal.heads["product"]
        assert head.ece_before > 0.2 and head.ece_after < 0.5 * head.ece_before
        before = expected_calibration_error(held_probs, held_labels)
        after = expected_calibration_error(cal.apply("product", held_probs), held_labels)
        assert after < 0.5 * before, (method, before, after)


def test_softmax_temperature_is_recovered():
    """Labels drawn from softmax(logit / 2.5) give back a temperature of about 2.5."""
    probs, labels = _softmax_set(50_000, 6, temperature=2.5, seed=3)
    assert fit_temperature(probs, labels, SOFTMAX_TEMPERATURE) == pytest.approx(2.5, rel=0.05)


def test_sigmoid_temperature_is_recovered_from_independent_targets():
    """0/1 targets drawn from sigmoid(logit / 0.5) give back a temperature of about 0.5."""
    rng = np.random.default_rng(4)
    z = rng.normal(0.0, 2.0, (20_000, 4))
    targets = (rng.random(z.shape) < sigmoid(z / 0.5)).astype(np.float64)
    got = fit_temperature(sigmoid(z), targets, SIGMOID_TEMPERATURE)
    assert got == pytest.approx(0.5, rel=0.05)


def test_temperature_stays_within_its_bounds():
    """Against 0/1 targets a split the model gets all right, or all wrong, runs into a
    bound; smoothed, the all-wrong one still does."""
    probs = np.array([[0.9, 0.2], [0.1, 0.8]])
    assert fit_temperature(probs, np.array([0, 1]), smoothed=False) == T_MIN
    assert fit_temperature(probs, np.array([1, 0]), smoothed=False) == T_MAX
    assert fit_temperature(probs, np.array([1, 0])) == T_MAX


def test_a_head_never_wrong_is_not_saturated():
    """A split without a mistake: 0/1 targets run into T_MIN and store 1.0 (six decimals)
    as most rows' top score; the smoothed targets' finite temperature keeps that to under
    half as many (the rows far ahead of their runner-up), and their mean top score under
    the smoothed target (n + a) / (n + 2a)."""
    rng = np.random.default_rng(8)
    n = 200
    z = rng.normal(0.0, 2.0, (n, 4))
    probs, labels = sigmoid(z), z.argmax(axis=1)

    def saturated(t: float) -> tuple[float, float]:
        top = transform(SOFTMAX_TEMPERATURE, probs, t).max(axis=1)
        return float(np.mean(np.round(top, 6) == 1.0)), float(top.mean())

    assert fit_temperature(probs, labels, smoothed=False) == T_MIN
    hard, _ = saturated(T_MIN)
    assert hard > 0.7
    t = fit_temperature(probs, labels)
    assert T_MIN < t < T_MAX
    share, mean = saturated(t)
    assert share < 0.5 * hard and mean < (n + PSEUDO_COUNT) / (n + 2 * PSEUDO_COUNT)


def test_smoothed_targets_barely_move_a_large_fit():
    """On 50,000 rows the smoothed and the 0/1 fit agree to 0.1%."""
    probs, labels = _softmax_set(50_000, 6, temperature=2.5, seed=9)
    hard = fit_temperature(probs, labels, smoothed=False)
    assert fit_temperature(probs, labels) == pytest.approx(hard, rel=1e-3)


def test_guard_keeps_a_temperature_that_lowers_the_cross_validated_ece():
    """Over-confident scores: the cross-validated ECE of the temperature is far below the
    raw one, so it is applied, and the recorded figures are what it gives."""
    probs, labels = _softmax_set(1000, 5, temperature=3.0, seed=10)
    head = fit_head(probs, labels)
    assert head.applied and head.folds == 5
    assert head.ece_cv < 0.5 * head.ece_before
    calibrated = transform(SOFTMAX_TEMPERATURE, probs, head.temperature)
    assert head.ece_after == pytest.approx(expected_calibration_error(calibrated, labels))
    cal = Calibration(SOFTMAX_TEMPERATURE, {"product": head})
    np.testing.assert_array_equal(cal.apply("product", probs), calibrated)


def _calibrated_raw_set(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Raw top scores that are right as often as they say, half of them with a runner-up
    scoring nearly as high: no one softmax temperature fits both halves."""
    rng = np.random.default_rng(seed)
    close = rng.random(n) < 0.5
    conf = rng.uniform(0.6, 0.95, n)
    raw = np.full((n, 3), 0.01)
    raw[:, 0] = conf
    raw[close, 1] = conf[close] - 0.02
    right = rng.random(n) < conf
    return raw, np.where(right, 0, np.where(close, 1, 2))


def test_guard_keeps_raw_scores_a_temperature_would_worsen():
    """Raw scores already calibrated that the softmax would distort: the temperature is
    recorded but not applied, and the head's scores stay raw."""
    raw, labels = _calibrated_raw_set(1000, seed=7)
    head = fit_head(raw, labels)
    assert not head.applied and head.ece_cv > head.ece_before
    assert head.ece_after == head.ece_before
    cal = Calibration(SOFTMAX_TEMPERATURE, {"product": head})
    np.testing.assert_array_equal(cal.apply("product", raw), raw)
    unguarded = fit_head(raw, labels, guard=False)
    assert unguarded.applied and unguarded.ece_after > head.ece_after
    assert unguarded.ece_cv is None and unguarded.folds is None


def test_cross_validation_is_repeatable_and_needs_two_rows():
    """The same split gives the same cross-validated ECE; folds never outnumber rows;
    a single row cannot be cross-validated, so it keeps its raw scores."""
    probs, labels = _softmax_set(300, 4, temperature=2.0, seed=11)
    assert cross_validated_ece(probs, labels) == cross_validated_ece(probs, labels)
    assert cross_validated_ece(probs[:3], labels[:3])[1] == 3
    assert cross_validated_ece(probs[:1], labels[:1]) is None
    one = fit_head(probs[:1], labels[:1])
    assert not one.applied and one.folds is None and one.ece_after == one.ece_before


def test_folds_share_the_mistakes():
    """Stratified folds: each of 5 folds of 100 rows with 10 mistakes gets 2 of them."""
    correct = np.ones(100, bool)
    correct[::10] = False
    fold = _stratified_folds(correct, 5, np.random.default_rng(0))
    assert np.bincount(fold).tolist() == [20] * 5
    assert np.bincount(fold[~correct]).tolist() == [2] * 5


def test_softmax_scores_sum_to_one_and_keep_the_order():
    """softmax_temperature scores sum to 1 per row and rank the classes as the raw ones."""
    rng = np.random.default_rng(5)
    raw = rng.random((50, 7))
    out = transform(SOFTMAX_TEMPERATURE, raw, 1.7)
    np.testing.assert_allclose(out.sum(axis=1), 1.0)
    np.testing.assert_array_equal(np.argsort(out, axis=1), np.argsort(raw, axis=1))


def test_sigmoid_temperature_one_is_the_raw_scores():
    """sigmoid_temperature at T = 1 gives back the raw scores (within the clipping)."""
    raw = np.array([[0.2, 0.7, 0.999]])
    np.testing.assert_allclose(transform(SIGMOID_TEMPERATURE, raw, 1.0), raw, atol=1e-9)


def test_saturated_scores_become_a_close_call():
    """Two raw scores of exactly 1.0 (saturated float32 sigmoids) split the probability."""
    out = transform(SOFTMAX_TEMPERATURE, np.array([[1.0, 1.0, 0.0]], np.float32), 1.0)
    np.testing.assert_allclose(out[0, :2], [0.5, 0.5], atol=1e-6)
    assert top_two_margin(out)[0] == pytest.approx(0.0, abs=1e-9)


def test_top_two_margin():
    """The margin is best minus second best per row, the best itself for one class."""
    scores = np.array([[0.1, 0.6, 0.3], [0.5, 0.5, 0.0], [0.0, 0.2, 0.9]])
    np.testing.assert_allclose(top_two_margin(scores), [0.3, 0.0, 0.7])
    np.testing.assert_allclose(top_two_margin(np.array([[0.8]])), [0.8])


def test_reliability_bins():
    """Each bin counts its items, their mean confidence and accuracy; empty bins are NaN."""
    scores = np.array([[0.95, 0.05], [0.92, 0.08], [0.55, 0.45]])
    rel = reliability(scores, np.array([0, 1, 0]), bins=10)
    assert rel.counts.tolist() == [0, 0, 0, 0, 0, 1, 0, 0, 0, 2]
    assert rel.confidence[9] == pytest.approx(0.935) and rel.accuracy[9] == 0.5
    assert np.isnan(rel.accuracy[0])
    assert rel.ece == pytest.approx((2 * abs(0.5 - 0.935) + abs(1 - 0.55)) / 3)


def test_params_round_trip_through_json():
    """to_dict -> JSON -> from_dict gives an equal calibration, uncaptioned part included."""
    probs, labels = _softmax_set(500, 3, temperature=2.0, seed=6)
    cal = fit_calibration(
        {"gender": (probs[:, :2], labels % 2), "product": (probs, labels)},
        uncaptioned={"product": (probs[:300], labels[:300])},
        fitted_on="validation split",
    )
    again = Calibration.from_dict(json.loads(json.dumps(cal.to_dict())))
    assert again == cal
    assert again.to_dict()["heads"]["product"]["items"] == 500
    assert again.to_dict()["uncaptioned"]["product"]["items"] == 300
    np.testing.assert_array_equal(again.apply("product", probs), cal.apply("product", probs))


def test_files_from_before_the_guard_load_as_applied():
    """A head without an 'applied' key (written before the guard) is applied; one marked
    not applied leaves its rows raw, whatever its temperature."""
    raw = np.array([[0.9, 0.3, 0.1]])
    old = Calibration.from_dict(
        {"method": SOFTMAX_TEMPERATURE, "heads": {"product": {"temperature": 2.0}}}
    )
    assert old.heads["product"].applied and old.heads["product"].ece_cv is None
    assert "ece_cv" not in old.to_dict()["heads"]["product"]
    np.testing.assert_allclose(old.apply("product", raw), transform(SOFTMAX_TEMPERATURE, raw, 2.0))
    params = {"temperature": 2.0, "applied": False}
    off = Calibration.from_dict({"method": SOFTMAX_TEMPERATURE, "heads": {"product": params}})
    np.testing.assert_array_equal(off.apply("product", raw), raw)


def test_params_without_uncaptioned_part_load():
    """A calibration without an 'uncaptioned' key (an image-only model's) loads."""
    cal = Calibration.from_dict({"method": SOFTMAX_TEMPERATURE, "heads": {}})
    assert cal.uncaptioned == {} and cal.bins == 15


def test_rows_without_caption_use_the_uncaptioned_temperature():
    """Rows fed no caption use the uncaptioned parameters, others (or all, when there are
    none) the head's."""
    raw = np.array([[0.9, 0.3, 0.1], [0.9, 0.3, 0.1]])
    cal = Calibration(
        SOFTMAX_TEMPERATURE,
        {"product": HeadCalibration(temperature=1.0)},
        uncaptioned={"product": HeadCalibration(temperature=4.0)},
    )
    out = cal.apply("product", raw, captioned=[True, False])
    np.testing.assert_allclose(out[0], transform(SOFTMAX_TEMPERATURE, raw[:1], 1.0)[0])
    np.testing.assert_allclose(out[1], transform(SOFTMAX_TEMPERATURE, raw[:1], 4.0)[0])
    np.testing.assert_array_equal(cal.apply("product", raw), cal.apply("product", raw, True))
    image_only = Calibration(SOFTMAX_TEMPERATURE, {"product": HeadCalibration(temperature=4.0)})
    np.testing.assert_array_equal(image_only.apply("product", raw, False)[0], out[1])


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"method": "isotonic", "heads": {}}, "unknown calibration method"),
        ({"method": SOFTMAX_TEMPERATURE}, "'heads'"),
        ({"method": SOFTMAX_TEMPERATURE, "heads": {"gender": {}}}, "no temperature"),
        ({"method": SOFTMAX_TEMPERATURE, "heads": {"gender": {"temperature": 0}}}, "> 0"),
        ({"method": SOFTMAX_TEMPERATURE, "heads": {"gender": {"temperature": "2"}}}, "> 0"),
        ({"method": SOFTMAX_TEMPERATURE, "heads": {}, "bins": 0}, "bins"),
        (
            {"method": SOFTMAX_TEMPERATURE, "heads": {"p": {"temperature": 1, "applied": "no"}}},
            "applied",
        ),
        ({"method": SOFTMAX_TEMPERATURE, "heads": {}, "uncaptioned": []}, "'uncaptioned'"),
        (
            {"method": SOFTMAX_TEMPERATURE, "heads": {}, "uncaptioned": {"p": {"temperature": -1}}},
            "> 0",
        ),
    ],
)
def test_malformed_params_are_refused(data, message):
    """from_dict names what is wrong instead of calibrating with nonsense."""
    with pytest.raises(ValueError, match=message):
        Calibration.from_dict(data)


def test_identity_when_absent():
    """No calibration, or none for a head, leaves the scores as they are."""
    raw = np.array([[0.9, 0.8, 0.1]], np.float32)
    np.testing.assert_array_equal(apply_calibration(None, "product", raw), raw)
    cal = Calibration(SOFTMAX_TEMPERATURE, {"gender": HeadCalibration(temperature=2.0)})
    np.testing.assert_array_equal(apply_calibration(cal, "product", raw), raw)
    assert apply_calibration(cal, "gender", raw[:, :2]).sum() == pytest.approx(1.0)


def test_bad_shapes_are_refused():
    """Scores that are not (N, classes), or labels that do not match them, raise ValueError."""
    with pytest.raises(ValueError, match="shape"):
        expected_calibration_error(np.array([0.5, 0.5]), np.array([0]))
    with pytest.raises(ValueError, match="labels"):
        expected_calibration_error(np.array([[0.5, 0.5]]), np.array([0, 1]))
    with pytest.raises(ValueError, match="class indices"):
        fit_temperature(np.array([[0.5, 0.5]]), np.array([2]))
    with pytest.raises(ValueError, match="one true class"):
        fit_temperature(np.array([[0.5, 0.5]]), np.array([[1.0, 1.0]]))
