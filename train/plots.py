"""PNG figures for the artifact's report: confusion matrices, training curves and the
calibration's reliability diagrams.

matplotlib with the non-interactive Agg backend, so it runs on servers without a display.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from tagger.calibration import Reliability

# (panel title, history key stems): each stem is plotted for training and validation.
CURVES = (
    ("total loss", "loss"),
    ("gender loss", "gender_loss"),
    ("product loss", "product_loss"),
    ("gender binary accuracy", "gender_binary_accuracy"),
    ("product AUC (multi-label)", "product_auc"),
    ("product top-1 accuracy", "product_top1"),
)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def plot_confusion(head_metrics: dict[str, Any], path: Path | str, *, title: str = "") -> Path:
    """Product-type confusion matrix (row-normalised colours, counts written in) beside
    the gender one, from one mode of :func:`train.metrics.evaluate`'s result."""
    plt = _pyplot()
    product, gender = head_metrics["product"], head_metrics["gender"]
    n = len(product["labels"])
    fig, axes = plt.subplots(
        1, 2, figsize=(6 + 0.45 * n, 2.5 + 0.4 * n), gridspec_kw={"width_ratios": [n, 4]}
    )
    for ax, head, name in ((axes[0], product, "product type"), (axes[1], gender, "gender")):
        cm = np.asarray(head["confusion_matrix"], dtype=np.float64)
        rows = cm.sum(axis=1, keepdims=True)
        share = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)
        ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
        labels = head["labels"]
        ax.set_xticks(range(len(labels)), labels, rotation=90, fontsize=8)
        ax.set_yticks(range(len(labels)), labels, fontsize=8)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(f"{name}: top-1 {head['top1']:.3f}", fontsize=10)
        for i in range(cm.shape[0]):
            for j in range(cm.shape[1]):
                if cm[i, j]:
                    colour = "white" if share[i, j] > 0.5 else "black"
                    ax.text(j, i, int(cm[i, j]), ha="center", va="center", fontsize=7, color=colour)
    items = head_metrics["items"]
    fig.suptitle(f"Confusion matrices ({title}, {items} items)" if title else "Confusion matrices")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


def plot_history(history: dict[str, list[float]], path: Path | str) -> Path:
    """One panel per figure of :data:`CURVES`, training and validation per epoch."""
    plt = _pyplot()
    panels = [(t, k) for t, k in CURVES if k in history or f"val_{k}" in history]
    cols = 3
    rows = max(1, -(-len(panels) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3 * rows), squeeze=False)
    best = int(np.argmin(history["val_loss"])) + 1 if history.get("val_loss") else None
    for ax, (title, key) in zip(axes.ravel(), panels, strict=False):
        for prefix, style in (("", "-"), ("val_", "--")):
            values = history.get(prefix + key)
            if values:
                epochs = range(1, len(values) + 1)
                label = "validation" if prefix else "training"
                ax.plot(epochs, values, style, marker="o", markersize=3, label=label)
        if best:
            ax.axvline(best, color="grey", linewidth=0.8, linestyle=":")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("epoch")
        ax.legend(fontsize=8)
    for ax in axes.ravel()[len(panels) :]:
        ax.axis("off")
    fig.suptitle("Training curves (dotted line: best epoch, the one saved)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


def plot_reliability(
    heads: dict[str, tuple[Reliability, Reliability]], path: Path | str, *, title: str = ""
) -> Path:
    """Reliability diagrams, one row per head (and input), raw scores left and calibrated
    right: per bin of top-class score, the accuracy (blue bar, item count at its foot) and
    the gap up or down to the bin's mean score (red); calibrated bars reach the diagonal."""
    plt = _pyplot()
    fig, axes = plt.subplots(len(heads), 2, figsize=(9, 3.6 * len(heads)), squeeze=False)
    for row, (head, pair) in zip(axes, heads.items(), strict=True):
        for ax, rel, name in zip(row, pair, ("raw", "calibrated"), strict=True):
            width = float(rel.edges[1] - rel.edges[0])
            # Empty bins are not drawn: their accuracy is undefined, not zero.
            full = rel.counts > 0
            left, acc, conf = rel.edges[:-1][full], rel.accuracy[full], rel.confidence[full]
            ax.bar(
                left,
                acc,
                width=width,
                align="edge",
                color="tab:blue",
                edgecolor="black",
                linewidth=0.5,
                label="accuracy",
            )
            ax.bar(
                left,
                conf - acc,
                bottom=acc,
                width=width,
                align="edge",
                color="tab:red",
                alpha=0.3,
                edgecolor="tab:red",
                hatch="//",
                label="gap to mean score",
            )
            for x, n in zip(left, rel.counts[full], strict=True):
                ax.text(
                    x + width / 2, 0.01, str(n), ha="center", va="bottom", fontsize=6, color="black"
                )
            ax.plot([0, 1], [0, 1], "--", color="grey", linewidth=0.8)
            ax.set_xlim(0, 1)
            ax.set_ylim(0, 1)
            ax.set_xlabel("top-class score")
            ax.set_ylabel("accuracy")
            ax.set_title(f"{head}, {name}: ECE {rel.ece:.3f}", fontsize=10)
            ax.legend(fontsize=7, loc="upper left")
    fig.suptitle(f"Reliability ({title})" if title else "Reliability")
    fig.tight_layout(rect=(0, 0, 1, 0.985))  # room for the suptitle
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)
