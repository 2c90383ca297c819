"""train.calibrate: which predictions fit's calibration uses, its printout and its PNG."""

from __future__ import annotations

import numpy as np
import pytest

from tagger.calibration import Calibration, HeadCalibration, softmax, transform
from tagger.review import fit_review_thresholds
from train.calibrate import (
    calibrate,
    format_calibration,
    format_review,
    review_thresholds,
    write_reliability,
)


def _probs(seed: int, n: int, classes: int, sharpness: float) -> tuple[np.ndarray, np.ndarray]:
    """Over-confident sigmoid-like scores and true classes that follow them loosely."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0.0, sharpness, (n, classes))
    labels = (rng.random((n, 1)) > softmax(z / 3).cumsum(axis=1)).sum(axis=1)
    return 1 / (1 + np.exp(-z)), np.minimum(labels, classes - 1)


def test_text_model_is_calibrated_with_and_without_captions():
    """A text model's heads are fitted on its captioned predictions, uncaptioned on the
    blanked ones; an image-only model has the one set."""
    g, g_true = _probs(1, 400, 2, 3.0)
    p, p_true = _probs(2, 400, 5, 6.0)
    blank_g, blank_p = g[::-1].copy(), p**0.5  # anything different
    text = calibrate({"image_only": (blank_g, blank_p), "image_text": (g, p)}, g_true, p_true)
    image = calibrate({"image_only": (g, p)}, g_true, p_true)
    assert text.heads == image.heads
    assert set(text.uncaptioned) == {"gender", "product"} and image.uncaptioned == {}
    assert text.uncaptioned["product"].items == 400
    assert text.uncaptioned["product"].temperature != text.heads["product"].temperature
    np.testing.assert_allclose(
        text.apply("product", p, captioned=False),
        transform("softmax_temperature", p, text.uncaptioned["product"].temperature),
    )


def test_format_names_each_head_and_input(tmp_path):
    """The printout has one line per head and caption use with T and ECE before -> after;
    the PNG is written."""
    g, g_true = _probs(3, 200, 2, 3.0)
    p, p_true = _probs(4, 200, 4, 6.0)
    modes = {"image_only": (g, p), "image_text": (g, p)}
    cal = calibrate(modes, g_true, p_true, fitted_on="validation split, 200 items")
    lines = format_calibration(cal).splitlines()
    assert lines[0] == "calibration (softmax_temperature, validation split, 200 items):"
    assert len(lines) == 5 and sum("image only" in line for line in lines) == 2
    product = cal.heads["product"]
    assert f"ECE {product.ece_before:.4f} -> {product.ece_after:.4f}" in lines[2]
    used = "used" if product.applied else "raw kept"
    assert f"T {product.temperature:.3f} ({used}, 5-fold ECE {product.ece_cv:.4f})" in lines[2]
    png = write_reliability(tmp_path, cal, modes, g_true, p_true)
    assert png == tmp_path / "reliability.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_calibration_needs_predictions():
    """No image-only predictions is an error, not an empty calibration."""
    with pytest.raises(ValueError, match="image_only"):
        calibrate({}, np.zeros(0), np.zeros(0))


def test_format_says_which_heads_keep_their_raw_scores():
    """A head whose temperature was turned down reads 'raw kept' and ECE unchanged."""
    cal = Calibration(
        "softmax_temperature",
        {
            "gender": HeadCalibration(0.8, 0.02, 0.01, 50, True, 0.015, 5),
            "product": HeadCalibration(2.0, 0.03, 0.03, 50, False, 0.05, 5),
        },
    )
    gender, product = format_calibration(cal).splitlines()[1:]
    assert "T 0.800 (used, 5-fold ECE 0.0150)  ECE 0.0200 -> 0.0100" in gender
    assert "T 2.000 (raw kept, 5-fold ECE 0.0500)  ECE 0.0300 -> 0.0300" in product


def test_review_thresholds_pool_both_inputs_of_a_text_model():
    """A text model's thresholds are fitted on its calibrated scores with and without
    captions, pooled (each item counted twice); an image-only model's on the one set."""
    g, g_true = _probs(5, 300, 2, 3.0)
    p, p_true = _probs(6, 300, 4, 6.0)
    blank_g, blank_p = g**2, p**0.5
    labels = dict(gender_labels=["MEN", "WOMEN"], product_labels=["A", "B", "C", "D"])
    modes = {"image_only": (blank_g, blank_p), "image_text": (g, p)}
    cal = calibrate(modes, g_true, p_true)
    review = review_thresholds(cal, modes, g_true, p_true, fitted_on="x", **labels)
    assert sum(review.support["product"].values()) == 600
    want = fit_review_thresholds(
        np.concatenate([cal.apply("gender", blank_g, False), cal.apply("gender", g, True)]),
        np.concatenate([g_true, g_true]),
        np.concatenate([cal.apply("product", blank_p, False), cal.apply("product", p, True)]),
        np.concatenate([p_true, p_true]),
        fitted_on="x",
        **labels,
    )
    assert review == want
    image = calibrate({"image_only": (g, p)}, g_true, p_true)
    alone = review_thresholds(image, {"image_only": (g, p)}, g_true, p_true, **labels)
    assert sum(alone.support["gender"].values()) == 300


def test_format_review_marks_the_pooled_fallback():
    """Each class's threshold is printed, a class with too few predictions starred."""
    g, g_true = _probs(7, 100, 2, 3.0)
    p, p_true = _probs(8, 100, 4, 6.0)
    labels = dict(gender_labels=["MEN", "WOMEN"], product_labels=["A", "B", "C", "D"])
    modes = {"image_only": (g, p)}
    review = review_thresholds(calibrate(modes, g_true, p_true), modes, g_true, p_true, **labels)
    text = format_review(review)
    assert text.splitlines()[0].startswith("review thresholds (precision 0.95")
    for label, t in review.product.items():
        few = review.support["product"][label] < 10
        assert f"{label} {t:.3f}{'*' if few else ''}" in text
