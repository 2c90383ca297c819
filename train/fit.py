"""Training: split, class-weighted losses, the fit loop, and the artifact with its report.

``fit`` is what ``python -m train fit`` runs. The loss is the notebook's: per head, binary
cross-entropy over the sigmoid outputs with each class's positive term weighted by
neg/pos counted on the training split. Adam, early stopping on the validation loss and a
checkpoint of the best epoch, whose weights are the ones saved; BatchNorm statistics are
recomputed before each validation pass (train.batchnorm). After training, each head's
scores are calibrated on the validation split (train.calibrate): the artifact carries the
calibration, and a reliability diagram with the calibration error before and after; and
per-class review thresholds fitted on the calibrated validation scores (review.json).

A run is reproducible for a seed: the split, the weight initialisation, the shuffle and
every augmentation draw follow ``FitOptions.seed``, and (``deterministic``, the default)
TensorFlow's op determinism is on while it trains, so the same seed on the same machine
and library build gives the same weights and figures.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tagger.artifacts import GENDER_HEAD, PRODUCT_HEAD
from train.model import ModelConfig

# numpy and the data pipeline are imported where they are used: `python -m train` imports
# this module for FitOptions' defaults, and its --help should not pay for them.
if TYPE_CHECKING:
    import numpy as np

    from tagger.calibration import Calibration
    from tagger.review import ReviewThresholds
    from train.data import LabelledSet

HISTORY_FILE = "history.json"
CHECKPOINT_FILE = "best.weights.h5"


#: The learning-rate schedules ``FitOptions.lr_schedule`` accepts.
LR_SCHEDULES = ("constant", "cosine")


@dataclass
class FitOptions:
    """How a model is trained: the one home of the training defaults.

    ``python -m train`` reads its option defaults from here (the architecture's from
    ``ModelConfig``), and so does scripts/quality.py for the settings it does not choose
    itself. The whole object is recorded in the artifact's metrics.json
    (``training.options``), so a run can be repeated from its artifact.
    """

    epochs: int = 10
    batch_size: int = 32
    val_split: float = 0.2
    #: the split, the weight initialisation, the shuffle and every augmentation draw
    seed: int = 42
    #: early stopping: epochs without a better validation loss
    patience: int = 3
    #: TensorFlow op determinism while training: same seed, same figures. Cheap on CPU
    #: (0-6% measured; the input pipeline holds no stateful ops for it to serialise), where
    #: the seeded, stateless pipeline alone already repeats exactly
    deterministic: bool = True
    #: Adam's rate (the notebook's); with "cosine", the peak reached after the warm-up.
    #: A fit setting rather than a ModelConfig one: the artifact's model does not use it
    learning_rate: float = 1e-3
    #: "constant" (the notebook's) or "cosine": one warm-up epoch from a tenth of the
    #: rate, then cosine decay to 2% over the planned epochs (steadier final epochs on
    #: short runs); one of LR_SCHEDULES
    lr_schedule: str = "constant"
    #: share of training captions blanked at random (text models only)
    caption_dropout: float = 0.0
    #: training items whose un-augmented batches recompute the BatchNorm statistics before
    #: each validation pass (train.batchnorm); 0 keeps Keras's moving averages
    bn_calibration_items: int = 512
    #: where the best epoch's weights are kept; None: a temporary folder
    checkpoint_dir: Path | None = None
    name: str | None = None


@dataclass
class FitResult:
    artifact: Path
    metrics: dict[str, Any]
    history: dict[str, list[float]]
    best_epoch: int
    seconds: float
    #: per-head score calibration fitted on the validation split (also in the artifact)
    calibration: Calibration | None = None
    #: per-class review thresholds on the calibrated validation scores (also in it)
    review: ReviewThresholds | None = None
    #: the trained Keras model (the best epoch's weights), as saved in the artifact
    model: Any = None


def pos_weights(indices: np.ndarray, n_classes: int) -> np.ndarray:
    """neg/pos per class on the training split (every class has >= 1 positive)."""
    import numpy as np

    pos = np.bincount(np.asarray(indices, np.int64), minlength=n_classes).astype(np.float64)
    if (pos == 0).any():
        raise ValueError("every class needs at least one training example")
    return ((len(indices) - pos) / pos).astype(np.float32)


def weighted_bce(pos_weight: Sequence[float]):
    """A Keras loss: mean over classes of -(w*y*log p + (1-y)*log(1-p))."""
    import keras
    from keras import ops

    class WeightedBinaryCrossentropy(keras.losses.Loss):
        def __init__(self, pos_weight: Sequence[float], name: str = "weighted_bce", **kw):
            super().__init__(name=name, **kw)
            self.pos_weight = [float(w) for w in pos_weight]

        def call(self, y_true, y_pred):
            eps = keras.backend.epsilon()
            p = ops.clip(y_pred, eps, 1.0 - eps)
            y = ops.cast(y_true, p.dtype)
            w = ops.convert_to_tensor(self.pos_weight, dtype=p.dtype)
            return ops.mean(-(w * y * ops.log(p) + (1.0 - y) * ops.log(1.0 - p)), axis=-1)

        def get_config(self):
            return {**super().get_config(), "pos_weight": self.pos_weight}

    return WeightedBinaryCrossentropy(pos_weight)


def fit(
    data: LabelledSet,
    out: Path | str,
    config: ModelConfig,
    options: FitOptions,
    *,
    log: Callable[[str], None] = print,
) -> FitResult:
    """Train on ``data`` and write the artifact folder ``out``."""
    with op_determinism(options.deterministic):
        return _fit(data, Path(out), config, options, log)


def _fit(
    data: LabelledSet,
    out: Path,
    config: ModelConfig,
    options: FitOptions,
    log: Callable[[str], None],
) -> FitResult:
    import keras
    import numpy as np

    from tagger.artifacts import save_artifact
    from train.batchnorm import Recalibrator, recalibrate_callback
    from train.calibrate import (
        calibrate,
        format_calibration,
        format_review,
        review_thresholds,
        write_reliability,
    )
    from train.data import check_training_classes, encode, make_dataset, split
    from train.evaluate import evaluate_examples, predict_modes, write_report
    from train.model import build_model

    started = time.monotonic()
    train, val = split(data, val_split=options.val_split, seed=options.seed)
    genders, products = check_training_classes(train, val, data.source)
    log(
        f"{data.layout}: {len(data.examples)} rows, {len(genders)} genders, {len(products)} "
        f"product types; training on {len(train)}, validating on {len(val)} "
        f"(seed {options.seed}{', deterministic' if options.deterministic else ''})"
    )
    keras.utils.set_random_seed(options.seed)
    model = build_model(
        config,
        gender_labels=genders,
        product_labels=products,
        captions=[e.caption for e in train] if config.use_text else None,
    )
    g_idx = np.array([genders.index(e.gender) for e in train])
    p_idx = np.array([products.index(e.product) for e in train])
    steps_per_epoch = -(-len(train) // options.batch_size)
    steps = steps_per_epoch * options.epochs
    model.compile(
        optimizer=keras.optimizers.Adam(_learning_rate(options, steps)),
        loss={
            GENDER_HEAD: weighted_bce(pos_weights(g_idx, len(genders))),
            PRODUCT_HEAD: weighted_bce(pos_weights(p_idx, len(products))),
        },
        metrics={
            GENDER_HEAD: [keras.metrics.BinaryAccuracy(name="binary_accuracy")],
            PRODUCT_HEAD: [
                keras.metrics.AUC(multi_label=True, name="auc"),
                keras.metrics.CategoricalAccuracy(name="top1"),
            ],
        },
    )

    common = dict(
        size=config.image_size,
        gender_labels=genders,
        product_labels=products,
        use_text=config.use_text,
        batch_size=options.batch_size,
        seed=options.seed,
        source=data.source,
    )
    train_ds = make_dataset(
        train, training=True, repeat=True, caption_dropout=options.caption_dropout, **common
    )
    val_ds = make_dataset(val, **common)
    callbacks = []
    if options.bn_calibration_items > 0:
        calibration = make_dataset(train[: options.bn_calibration_items], **common)
        callbacks.append(recalibrate_callback(Recalibrator(model), calibration))

    tmp = None
    ckpt_dir = options.checkpoint_dir
    if ckpt_dir is None:
        ckpt_dir = tmp = Path(tempfile.mkdtemp(prefix="tagger-fit-"))
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    ckpt = ckpt_dir / CHECKPOINT_FILE
    try:
        # One endless iterator (repeat=True; each pass reshuffles) instead of a new one per
        # epoch: destroying the previous epoch's iterator blocked on a tf.data background
        # thread for ~8 s with the CPU idle, in about every other epoch (py-spy).
        history = model.fit(
            train_ds,
            steps_per_epoch=steps_per_epoch,
            validation_data=val_ds,
            epochs=options.epochs,
            shuffle=False,  # the dataset shuffles itself
            verbose=0,
            callbacks=[
                keras.callbacks.ModelCheckpoint(
                    ckpt, monitor="val_loss", save_best_only=True, save_weights_only=True
                ),
                keras.callbacks.EarlyStopping(monitor="val_loss", patience=options.patience),
                _progress(options.epochs, log),
                *callbacks,
            ],
        ).history
        model.load_weights(ckpt)  # the best epoch, not the last
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    history = {k: [float(v) for v in vs] for k, vs in history.items()}
    best = int(np.argmin(history["val_loss"]))
    log(f"best epoch {best + 1}: val_loss {history['val_loss'][best]:.4f}; evaluating")

    shape = dict(
        gender_labels=genders,
        product_labels=products,
        image_size=config.image_size,
        use_text=config.use_text,
        batch_size=options.batch_size,
        source=data.source,
    )
    val_probs = predict_modes(model, val, **shape)
    val_true = encode(val, genders, products, data.source)
    fitted_on = f"validation split, {len(val)} items"
    calibration = calibrate(val_probs, *val_true, fitted_on=fitted_on)
    review = review_thresholds(
        calibration,
        val_probs,
        *val_true,
        gender_labels=genders,
        product_labels=products,
        fitted_on=fitted_on + (", with and without captions" if config.use_text else ""),
    )
    metrics = evaluate_examples(model, val, probs=val_probs, calibration=calibration, **shape)
    metrics["evaluated_on"] = (
        f"validation split: {len(val)} of {len(data.examples)} rows of {data.source} "
        f"(--val-split {options.val_split}, --seed {options.seed})"
    )
    metrics["training"] = {
        "train_items": len(train),
        "val_items": len(val),
        "epochs_run": len(history["val_loss"]),
        "best_epoch": best + 1,
        "val_loss": history["val_loss"][best],
        "seconds": round(time.monotonic() - started, 1),
        "options": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(options).items()},
    }
    metrics["val_loss"] = history["val_loss"][best]
    # An uncompiled twin (same layers, same weights): the artifact carries no optimizer
    # state and no custom loss, so the worker loads it with nothing but Keras.
    inference = keras.Model(inputs=model.input, outputs=model.output, name=model.name)
    save_artifact(
        inference,
        out,
        config=config,
        gender_labels=genders,
        product_labels=products,
        metrics=metrics,
        name=options.name or f"fit {Path(data.source).name}",
        calibration=calibration,
        review=review,
    )
    (out / HISTORY_FILE).write_text(json.dumps(history, indent=2) + "\n", encoding="utf-8")
    write_report(out, metrics, history=history)
    write_reliability(out, calibration, val_probs, *val_true)
    log(format_calibration(calibration))
    log(format_review(review))
    seconds = time.monotonic() - started
    return FitResult(
        artifact=out,
        metrics=metrics,
        history=history,
        best_epoch=best + 1,
        seconds=seconds,
        calibration=calibration,
        review=review,
        model=inference,
    )


@contextmanager
def op_determinism(enabled: bool) -> Iterator[None]:
    """TensorFlow op determinism on (``enabled``) for the block, then as it was before.

    Restoring matters where fit runs inside a longer-lived process (the tests): op
    determinism is process-wide and also serialises tf.data functions that hold state.
    TensorFlow only exports the switch-on; the switch-off and the query are read from its
    framework module and, if a release drops them, determinism simply stays on.
    """
    import tensorflow as tf

    if not enabled:
        yield
        return
    try:
        from tensorflow.python.framework import config as tf_config

        was_on = tf_config.is_op_determinism_enabled()
        switch_off = tf_config.disable_op_determinism
    except (ImportError, AttributeError):
        was_on, switch_off = True, None
    tf.config.experimental.enable_op_determinism()
    try:
        yield
    finally:
        if not was_on and switch_off is not None:
            switch_off()


def _learning_rate(options: FitOptions, steps: int):
    import keras

    if options.lr_schedule not in LR_SCHEDULES:
        raise ValueError(f"unknown learning-rate schedule {options.lr_schedule!r}")
    if options.lr_schedule == "constant":
        return options.learning_rate
    warmup = min(steps // options.epochs, steps // 2)
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=options.learning_rate / 10,
        warmup_target=options.learning_rate,
        warmup_steps=warmup,
        decay_steps=max(1, steps - warmup),
        alpha=0.02,
    )


def _progress_line(epoch: int, epochs: int, logs: dict[str, float], seconds: float) -> str:
    def fmt(key: str) -> str:
        value = logs.get(key)
        return "-" if value is None else f"{value:.3f}"

    return (
        f"epoch {epoch}/{epochs}  loss {fmt('loss')}  val_loss {fmt('val_loss')}  "
        f"val gender_acc {fmt('val_gender_binary_accuracy')}  "
        f"val product_top1 {fmt('val_product_top1')}  val product_auc {fmt('val_product_auc')}"
        f"  ({seconds:.0f}s)"
    )


def _progress(epochs: int, log: Callable[[str], None]):
    """A Keras callback that logs one line per epoch."""
    import keras

    class Progress(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch: int, logs=None) -> None:
            self.started = time.monotonic()

        def on_epoch_end(self, epoch: int, logs=None) -> None:
            seconds = time.monotonic() - self.started
            log(_progress_line(epoch + 1, epochs, logs or {}, seconds))

    return Progress()
