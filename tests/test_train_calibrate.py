"""train.calibrate: which predictions fit's calibration uses, its printout and its PNG."""

from __future__ import annotations

import numpy as np
import pytest

from tagger.calibration import softmax, transform
from train.calibrate import calibrate, format_calibration, write_reliability


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
    png = write_reliability(tmp_path, cal, modes, g_true, p_true)
    assert png == tmp_path / "reliability.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_calibration_needs_predictions():
    """No image-only predictions is an error, not an empty calibration."""
    with pytest.raises(ValueError, match="image_only"):
        calibrate({}, np.zeros(0), np.zeros(0))
