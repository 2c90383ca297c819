"""Evaluating a model on a labelled set: figures, their report files and a printed summary.

Two modes are always reported apart, because DeepFashion captions name the wearer
("this lady ...") and so inflate gender accuracy:

* ``image_only``: the image alone. For a model with a caption input the captions are
  blanked to ``""``, which is exactly what the worker feeds for an item without a title;
* ``image_text``: image and caption (text models only).

The flat headline keys of ``metrics.json`` (what ``tagger model list`` shows) are the
image-only ones; the image+text ones carry a ``with_text_`` prefix.

Each mode also has each head's expected calibration error (``gender_ece``,
``product_ece``: top class, ``tagger.reliability``) of the raw scores and, for a model
with a calibration, a ``calibrated`` block: the headline figures and ECEs of the scores
the worker stores. Calibration keeps each row's order of classes, so accuracy, top-1 and
F1 are the raw ones again; binary accuracy (a 0.5 cut), AUC and ECE change.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tagger.artifacts import GENDER_HEAD, PRODUCT_HEAD
from tagger.calibration import Calibration
from tagger.reliability import expected_calibration_error
from train.data import Example, encode, make_dataset
from train.metrics import HEADLINE, evaluate

METRICS_FILE = "metrics.json"
CONFUSION_FILE = "confusion_matrix.png"
CONFUSION_TEXT_FILE = "confusion_matrix_with_text.png"
CURVES_FILE = "training_curves.png"
IMAGE_ONLY, IMAGE_TEXT = "image_only", "image_text"


def predict_probs(
    model: Any,
    examples: Sequence[Example],
    *,
    gender_labels: Sequence[str],
    product_labels: Sequence[str],
    image_size: int,
    use_text: bool,
    blank_captions: bool,
    batch_size: int = 32,
    source: str = "",
) -> tuple[np.ndarray, np.ndarray]:
    """(gender, product) probabilities of a Keras model on ``examples``, in order."""
    ds = make_dataset(
        examples,
        size=image_size,
        gender_labels=gender_labels,
        product_labels=product_labels,
        use_text=use_text,
        batch_size=batch_size,
        blank_captions=blank_captions,
        source=source,
    )
    gender, product = [], []
    for inputs, _ in ds:
        out = model.predict_on_batch(inputs)
        gender.append(np.asarray(out[GENDER_HEAD]))
        product.append(np.asarray(out[PRODUCT_HEAD]))
    return np.concatenate(gender), np.concatenate(product)


def predict_modes(
    model: Any,
    examples: Sequence[Example],
    *,
    gender_labels: Sequence[str],
    product_labels: Sequence[str],
    image_size: int,
    use_text: bool,
    batch_size: int = 32,
    source: str = "",
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{mode: (gender, product) probabilities}: image-only, and image+text for text models."""
    modes = [(IMAGE_ONLY, True)] + ([(IMAGE_TEXT, False)] if use_text else [])
    return {
        mode: predict_probs(
            model,
            examples,
            gender_labels=gender_labels,
            product_labels=product_labels,
            image_size=image_size,
            use_text=use_text,
            blank_captions=blank,
            batch_size=batch_size,
            source=source,
        )
        for mode, blank in modes
    }


def evaluate_examples(
    model: Any,
    examples: Sequence[Example],
    *,
    gender_labels: Sequence[str],
    product_labels: Sequence[str],
    image_size: int,
    use_text: bool,
    batch_size: int = 32,
    source: str = "",
    probs: dict[str, tuple[np.ndarray, np.ndarray]] | None = None,
    calibration: Calibration | None = None,
) -> dict[str, Any]:
    """Figures of ``model`` on ``examples``: image-only, and image+text for text models.

    ``probs``: :func:`predict_modes`'s result when the caller already has it (fit uses
    the same predictions for the calibration), so the model is not run twice.
    ``calibration``: the artifact's; each mode then also has its ``calibrated`` figures.
    """
    g_true, p_true = encode(examples, gender_labels, product_labels, source)
    if probs is None:
        probs = predict_modes(
            model,
            examples,
            gender_labels=gender_labels,
            product_labels=product_labels,
            image_size=image_size,
            use_text=use_text,
            batch_size=batch_size,
            source=source,
        )
    metrics: dict[str, Any] = {"items": len(examples), "uses_text": use_text}
    for mode, (g_probs, p_probs) in probs.items():
        metrics[mode] = _figures(g_true, g_probs, p_true, p_probs, gender_labels, product_labels)
        if calibration is not None:
            captioned = mode == IMAGE_TEXT
            calibrated = _figures(
                g_true,
                calibration.apply(GENDER_HEAD, g_probs, captioned),
                p_true,
                calibration.apply(PRODUCT_HEAD, p_probs, captioned),
                gender_labels,
                product_labels,
            )
            metrics[mode]["calibrated"] = {k: calibrated[k] for k in REPORTED}
    for key in HEADLINE:
        metrics[key] = metrics[IMAGE_ONLY][key]
        if use_text:
            metrics[f"with_text_{key}"] = metrics[IMAGE_TEXT][key]
    return metrics


#: the headline figures and the two heads' ECE: what a mode's ``calibrated`` block has
ECE_KEYS = ("gender_ece", "product_ece")
REPORTED = (*HEADLINE, *ECE_KEYS)


def _figures(
    g_true: np.ndarray,
    g_probs: np.ndarray,
    p_true: np.ndarray,
    p_probs: np.ndarray,
    gender_labels: Sequence[str],
    product_labels: Sequence[str],
) -> dict[str, Any]:
    """train.metrics.evaluate's figures plus each head's ECE (None without rows)."""
    figures = evaluate(
        gender_true=g_true,
        gender_probs=g_probs,
        product_true=p_true,
        product_probs=p_probs,
        gender_labels=gender_labels,
        product_labels=product_labels,
    )
    for key, probs, true in (("gender_ece", g_probs, g_true), ("product_ece", p_probs, p_true)):
        figures[key] = expected_calibration_error(probs, true) if len(true) else None
    return figures


def write_report(
    out_dir: Path | str,
    metrics: dict[str, Any],
    *,
    history: dict[str, list[float]] | None = None,
) -> list[Path]:
    """metrics.json, the confusion-matrix PNG(s) and, given a history, the curves PNG."""
    from train.plots import plot_confusion, plot_history

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / METRICS_FILE
    path.write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    written = [path]
    for mode, fname in ((IMAGE_ONLY, CONFUSION_FILE), (IMAGE_TEXT, CONFUSION_TEXT_FILE)):
        if mode in metrics:
            title = "image only" if mode == IMAGE_ONLY else "image + caption"
            written.append(plot_confusion(metrics[mode], out_dir / fname, title=title))
    if history:
        written.append(plot_history(history, out_dir / CURVES_FILE))
    return written


def format_report(metrics: dict[str, Any], *, per_class: bool = True) -> str:
    """A plain-text summary: headline figures per mode, then per product type."""
    modes = [m for m in (IMAGE_ONLY, IMAGE_TEXT) if m in metrics]
    names = {IMAGE_ONLY: "image only", IMAGE_TEXT: "image + caption"}
    width = 24
    lines = [f"{'':{width}}" + "".join(f"{names[m]:>18}" for m in modes)]
    for key in REPORTED:
        cells = "".join(f"{_num(metrics[m].get(key)):>18}" for m in modes)
        lines.append(f"{key:{width}}{cells}")
    lines.append(f"{'items':{width}}" + "".join(f"{metrics[m]['items']:>18}" for m in modes))
    if any("calibrated" in metrics[m] for m in modes):
        # calibration keeps each row's order of classes: accuracy, top-1, F1 are the above
        lines.append("calibrated (the scores the worker stores; the same tags):")
        for key in ("gender_binary_accuracy", "product_auc", *ECE_KEYS):
            cells = "".join(f"{_num(metrics[m].get('calibrated', {}).get(key)):>18}" for m in modes)
            lines.append(f"  {key:{width - 2}}{cells}")
    if per_class:
        main = modes[-1]
        lines.append("")
        lines.append(f"per product type ({names[main]}):  precision  recall      f1  support")
        for label, r in metrics[main]["product"]["per_class"].items():
            lines.append(
                f"  {label:30}{r['precision']:>10.3f}{r['recall']:>8.3f}{r['f1']:>8.3f}"
                f"{r['support']:>9}"
            )
    return "\n".join(lines)


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def evaluate_artifact(
    artifact: Path | str,
    labels_csv: Path | str,
    images_dir: Path | str | None = None,
    *,
    batch_size: int = 32,
) -> dict[str, Any]:
    """Load an artifact the way the worker does and evaluate it on a labelled CSV."""
    from tagger.model import load_model
    from train.data import read_labelled

    data = read_labelled(labels_csv, images_dir)
    model = load_model(artifact, version="evaluate")
    metrics = evaluate_examples(
        model.keras_model,
        data.examples,
        gender_labels=model.gender_labels,
        product_labels=model.product_labels,
        image_size=model.image_size,
        use_text=model.uses_text,
        batch_size=batch_size,
        source=data.source,
        calibration=model.calibration,
    )
    metrics["evaluated_on"] = f"{len(data.examples)} rows of {data.source} ({data.layout})"
    metrics["artifact"] = str(artifact)
    return metrics
