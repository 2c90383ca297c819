"""Inference: a loaded model version (``LoadedModel.predict``), its Keras runtime, and
TensorFlow set-up.

The artifact's format (names, files, checks) is ``tagger.artifacts``; this module only
loads one and runs it. The OpenVINO runtime is ``tagger.openvino_model``; which one a
worker uses is ``tagger.runtime``. TensorFlow is imported only where a Keras model is
loaded or configured: the worker must first import it in its child process, after the
fork, and a worker on OpenVINO never imports it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from tagger.artifacts import (
    CAPTION_INPUT,
    CONFIG_FILE,
    GENDER_HEAD,
    IMAGE_INPUT,
    LABELS_FILE,
    MODEL_FILE,
    PRODUCT_HEAD,
    model_signature,
    read_artifact_info,
)
from tagger.calibration import Calibration
from tagger.exceptions import ArtifactError
from tagger.scoring import Prediction, to_predictions

if TYPE_CHECKING:
    import keras

log = logging.getLogger(__name__)


class LoadedModel:
    """A loaded model version plus its labels, whatever runs it; ``predict`` tags a whole
    batch in one model call. Subclasses implement ``_scores`` for their runtime."""

    #: the inference runtime's name (metrics, logs)
    runtime = ""

    def __init__(
        self,
        *,
        version: str,
        gender_labels: Sequence[str],
        product_labels: Sequence[str],
        image_size: int,
        uses_text: bool,
        calibration: Calibration | None = None,
    ) -> None:
        self.version = version
        # The artifact's calibration (None: scores as the model gives them).
        self.calibration = calibration
        self.gender_labels = list(gender_labels)
        self.product_labels = list(product_labels)
        self.image_size = image_size
        self.uses_text = uses_text
        # Neither runtime documents its models as safe for concurrent calls, and a worker
        # may predict from more than one thread (`--pool threads`): calls are serialised.
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(version={self.version!r}, image_size={self.image_size}, "
            f"uses_text={self.uses_text})"
        )

    def predict(self, images: np.ndarray, captions: Sequence[str | None]) -> list[Prediction]:
        """Tag N images (uint8, (N, S, S, 3)) with their captions (None -> no text)."""
        images = np.asarray(images)
        size = self.image_size
        if images.ndim != 4 or images.shape[1:] != (size, size, 3):
            raise ValueError(f"images must have shape (N, {size}, {size}, 3), got {images.shape}")
        if images.dtype != np.uint8:
            # Decoded pixels are uint8; the OpenVINO graph takes them as such, and a float
            # batch there would be truncated silently. Refused on every runtime alike.
            raise ValueError(f"images must be uint8 pixels, got {images.dtype}")
        if len(captions) != images.shape[0]:
            raise ValueError(f"{images.shape[0]} images but {len(captions)} captions")
        if images.shape[0] == 0:
            return []
        with self._lock:
            gender, product = self._scores(images, list(captions))
        # A text model's rows without a caption have calibration parameters of their own.
        captioned = [bool(c) for c in captions] if self.uses_text else None
        return to_predictions(
            gender,
            product,
            gender_labels=self.gender_labels,
            product_labels=self.product_labels,
            calibration=self.calibration,
            captioned=captioned,
        )

    def _scores(
        self, images: np.ndarray, captions: list[str | None]
    ) -> tuple[np.ndarray, np.ndarray]:
        """(gender, product) sigmoid scores of the N images, N rows each."""
        raise NotImplementedError

    def warmup(self, batch_size: int = 1) -> None:
        """Run a dummy batch so one-off set-up (graph tracing) happens before real work."""
        blank = np.zeros((batch_size, self.image_size, self.image_size, 3), dtype=np.uint8)
        self.predict(blank, [""] * batch_size)


class KerasModel(LoadedModel):
    """The artifact's Keras model run by TensorFlow (GPU workers, and TAGGER_RUNTIME=keras)."""

    runtime = "keras"

    def __init__(
        self,
        keras_model: keras.Model,
        *,
        version: str,
        gender_labels: Sequence[str],
        product_labels: Sequence[str],
        calibration: Calibration | None = None,
    ) -> None:
        inputs, _ = model_signature(keras_model)
        super().__init__(
            version=version,
            gender_labels=gender_labels,
            product_labels=product_labels,
            image_size=int(keras_model.input[IMAGE_INPUT].shape[1]),
            uses_text=CAPTION_INPUT in inputs,
            calibration=calibration,
        )
        self.keras_model = keras_model

    def _scores(
        self, images: np.ndarray, captions: list[str | None]
    ) -> tuple[np.ndarray, np.ndarray]:
        n = images.shape[0]
        # Every new batch length costs a graph trace (~2 s on a CPU): a job's last batch,
        # or a batch with a few broken images, would pay it again and again. Padding to
        # the next power of two bounds the traces per process to a handful.
        padded = padded_length(n)
        # Raw 0-255 values: the model rescales internally (see tagger.artifacts).
        pixels = np.zeros((padded, *images.shape[1:]), dtype=np.float32)
        pixels[:n] = images
        inputs: dict[str, np.ndarray] = {IMAGE_INPUT: pixels}
        if self.uses_text:
            texts = [c if isinstance(c, str) else "" for c in captions]
            texts += [""] * (padded - n)
            inputs[CAPTION_INPUT] = np.array(texts, dtype=str).reshape(-1, 1)
        # predict_on_batch, not predict(): one graph call with no per-call dataset and
        # callback set-up, which dominates for a single batch.
        out = self.keras_model.predict_on_batch(inputs)
        return np.asarray(out[GENDER_HEAD])[:n], np.asarray(out[PRODUCT_HEAD])[:n]


def padded_length(n: int) -> int:
    """The batch length a batch of ``n`` is padded to: the next power of two."""
    return 1 << max(0, n - 1).bit_length()


def load_model(path: Path | str, *, version: str) -> KerasModel:
    """Load the artifact folder ``path`` (checked first) as a :class:`KerasModel`."""
    import keras

    info = read_artifact_info(path)
    try:
        # compile=False: inference needs no optimizer or losses. safe_mode (the default)
        # stays on: an artifact from storage must not be able to run arbitrary code.
        keras_model = keras.models.load_model(info.path / MODEL_FILE, compile=False)
    except Exception as e:
        raise ArtifactError(f"cannot load {info.path / MODEL_FILE}: {e}") from e
    _, sizes = model_signature(keras_model)
    for head, head_labels in info.labels.items():
        if sizes.get(head) != len(head_labels):
            raise ArtifactError(
                f"artifact {info.path}: head {head!r} has {sizes.get(head)} outputs but "
                f"{LABELS_FILE} lists {len(head_labels)} labels"
            )
    model = KerasModel(
        keras_model,
        version=version,
        gender_labels=info.gender_labels,
        product_labels=info.product_labels,
        calibration=info.calibration,
    )
    if model.image_size != info.image_size:
        raise ArtifactError(
            f"artifact {info.path}: model input is {model.image_size}px but "
            f"{CONFIG_FILE} says {info.image_size}px"
        )
    return model


def configure_tensorflow(*, memory_growth: bool, mixed_precision: bool, threads: int = 0) -> None:
    """Per-process TensorFlow set-up; call once, before any model is built or loaded.
    ``threads``: threads one operation may use (0: TensorFlow's default, every core)."""
    import keras
    import tensorflow as tf

    if threads:
        tf.config.threading.set_intra_op_parallelism_threads(threads)

    gpus = tf.config.list_physical_devices("GPU")
    if memory_growth:
        for gpu in gpus:
            try:
                # Without growth TensorFlow grabs nearly all GPU memory up front.
                tf.config.experimental.set_memory_growth(gpu, True)
            except RuntimeError as e:  # the GPU runtime was already initialised
                log.warning("cannot enable memory growth on %s: %s", gpu.name, e)
    if mixed_precision:
        if gpus:
            keras.mixed_precision.set_global_policy("mixed_float16")
        else:
            # float16 arithmetic is emulated (slow) on CPUs: ignore the setting there.
            log.info("mixed precision requested but no GPU is visible; staying in float32")
