"""Model artifacts and inference: the worker's side of the model.

An artifact is a folder::

    model.keras     Keras 3 native format (architecture, weights, text vocabulary)
    labels.json     {"gender": [...], "product": [...]}: column order of the two heads
    config.json     train.model.ModelConfig as a dict, plus the format version
    metadata.json   created_at, tagger/tensorflow/keras versions, name, metrics
    metrics.json    (optional) evaluation figures

TensorFlow is imported only where a model is saved, loaded or configured, so reading an
artifact's labels and fingerprint (``tagger model register``) stays fast.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

import tagger
from tagger.exceptions import ArtifactError
from tagger.scoring import Prediction, to_predictions
from train.model import CAPTION_INPUT, GENDER_HEAD, IMAGE_INPUT, PRODUCT_HEAD, ModelConfig

if TYPE_CHECKING:
    import keras

log = logging.getLogger(__name__)

MODEL_FILE = "model.keras"
LABELS_FILE = "labels.json"
CONFIG_FILE = "config.json"
METADATA_FILE = "metadata.json"
METRICS_FILE = "metrics.json"
REQUIRED_FILES = (MODEL_FILE, LABELS_FILE, CONFIG_FILE, METADATA_FILE)
ARTIFACT_FORMAT = 1


def save_artifact(
    model: keras.Model,
    path: Path | str,
    *,
    config: ModelConfig | dict[str, Any],
    gender_labels: Sequence[str],
    product_labels: Sequence[str],
    metrics: dict[str, Any] | None = None,
    name: str | None = None,
) -> Path:
    """Write ``model`` and its labels, config and metadata to the folder ``path``."""
    import keras
    import tensorflow as tf

    path = Path(path)
    labels = {GENDER_HEAD: list(gender_labels), PRODUCT_HEAD: list(product_labels)}
    _check_labels(labels, where="labels")
    inputs, sizes = _signature(model)
    for head, head_labels in labels.items():
        if sizes.get(head) != len(head_labels):
            raise ArtifactError(
                f"model head {head!r} has {sizes.get(head)} outputs but "
                f"{len(head_labels)} labels were given"
            )
    cfg = config.to_dict() if isinstance(config, ModelConfig) else dict(config)
    image_size = int(model.input[IMAGE_INPUT].shape[1]) if IMAGE_INPUT in inputs else None
    if image_size is None or cfg.get("image_size", image_size) != image_size:
        raise ArtifactError(
            f"config image_size {cfg.get('image_size')} does not match the model's input "
            f"size {image_size}"
        )
    cfg.update(image_size=image_size, use_text=CAPTION_INPUT in inputs, format=ARTIFACT_FORMAT)

    if path.exists() and not path.is_dir():
        raise ArtifactError(f"{path} exists and is not a folder")
    path.mkdir(parents=True, exist_ok=True)
    # Each file is written to a temporary name and renamed, so a reader never sees half
    # a file; labels.json goes last as it is what marks the folder as usable.
    tmp_model = path / f".{MODEL_FILE}.tmp.keras"
    model.save(tmp_model)
    os.replace(tmp_model, path / MODEL_FILE)
    metadata = {
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "tagger_version": tagger.__version__,
        "tensorflow_version": tf.__version__,
        "keras_version": keras.__version__,
        "name": name,
        "metrics": metrics or {},
    }
    _write_json(path / CONFIG_FILE, cfg)
    _write_json(path / METADATA_FILE, metadata)
    if metrics is not None:
        _write_json(path / METRICS_FILE, metrics)
    _write_json(path / LABELS_FILE, labels)
    return path


def artifact_fingerprint(path: Path | str) -> str:
    """First 12 hex digits of sha256(labels.json bytes + model.keras bytes).

    Used as the default model version id: the same files always give the same id, and
    any change to the weights or the label order gives a new one.
    """
    path = Path(path)
    digest = hashlib.sha256()
    for fname in (LABELS_FILE, MODEL_FILE):
        try:
            with open(path / fname, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    digest.update(chunk)
        except OSError as e:
            raise ArtifactError(f"artifact {path}: cannot read {fname}: {e.strerror}") from e
    return digest.hexdigest()[:12]


@dataclass(frozen=True)
class ArtifactInfo:
    """What an artifact says about itself, read without TensorFlow."""

    path: Path
    labels: dict[str, list[str]]
    config: dict[str, Any]
    metadata: dict[str, Any]
    metrics: dict[str, Any]

    @property
    def gender_labels(self) -> list[str]:
        return self.labels[GENDER_HEAD]

    @property
    def product_labels(self) -> list[str]:
        return self.labels[PRODUCT_HEAD]

    @property
    def image_size(self) -> int:
        return int(self.config["image_size"])

    @property
    def uses_text(self) -> bool:
        return bool(self.config.get("use_text", True))


def read_artifact_info(path: Path | str) -> ArtifactInfo:
    """Read and check an artifact folder; ArtifactError names the missing or bad file."""
    path = Path(path)
    if not path.is_dir():
        raise ArtifactError(f"artifact folder not found: {path}")
    for fname in REQUIRED_FILES:
        if not (path / fname).is_file():
            raise ArtifactError(f"artifact {path} is incomplete: {fname} is missing")
    labels = _read_json(path / LABELS_FILE)
    _check_labels(labels, where=f"{path / LABELS_FILE}")
    config = _read_json(path / CONFIG_FILE)
    size = config.get("image_size")
    if not isinstance(size, int) or isinstance(size, bool) or size < 1:
        raise ArtifactError(f"{path / CONFIG_FILE}: image_size must be a positive integer")
    metadata = _read_json(path / METADATA_FILE)
    metrics = (
        _read_json(path / METRICS_FILE)
        if (path / METRICS_FILE).is_file()
        else metadata.get("metrics") or {}
    )
    return ArtifactInfo(
        path=path,
        labels={GENDER_HEAD: labels[GENDER_HEAD], PRODUCT_HEAD: labels[PRODUCT_HEAD]},
        config=config,
        metadata=metadata,
        metrics=metrics,
    )


class TaggerModel:
    """A loaded model plus its labels; ``predict`` tags a whole batch in one model call."""

    def __init__(
        self,
        keras_model: keras.Model,
        *,
        version: str,
        gender_labels: Sequence[str],
        product_labels: Sequence[str],
    ) -> None:
        inputs, _ = _signature(keras_model)
        self.keras_model = keras_model
        self.version = version
        self.gender_labels = list(gender_labels)
        self.product_labels = list(product_labels)
        self.image_size = int(keras_model.input[IMAGE_INPUT].shape[1])
        self.uses_text = CAPTION_INPUT in inputs
        # Keras models are not documented as safe for concurrent calls; a worker may
        # predict from more than one thread, so calls are serialised.
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return (
            f"TaggerModel(version={self.version!r}, image_size={self.image_size}, "
            f"uses_text={self.uses_text})"
        )

    def predict(self, images: np.ndarray, captions: Sequence[str | None]) -> list[Prediction]:
        """Tag N images (uint8, (N, S, S, 3)) with their captions (None -> no text)."""
        images = np.asarray(images)
        size = self.image_size
        if images.ndim != 4 or images.shape[1:] != (size, size, 3):
            raise ValueError(f"images must have shape (N, {size}, {size}, 3), got {images.shape}")
        if len(captions) != images.shape[0]:
            raise ValueError(f"{images.shape[0]} images but {len(captions)} captions")
        if images.shape[0] == 0:
            return []
        n = images.shape[0]
        # Every new batch length costs a graph trace (~2 s on a CPU): a job's last batch,
        # or a batch with a few broken images, would pay it again and again. Padding to
        # the next power of two bounds the traces per process to a handful.
        padded = padded_length(n)
        # Raw 0-255 values: the backbone rescales internally (see train.model).
        pixels = np.zeros((padded, *images.shape[1:]), dtype=np.float32)
        pixels[:n] = images
        inputs: dict[str, np.ndarray] = {IMAGE_INPUT: pixels}
        if self.uses_text:
            texts = [c if isinstance(c, str) else "" for c in captions]
            texts += [""] * (padded - n)
            inputs[CAPTION_INPUT] = np.array(texts, dtype=str).reshape(-1, 1)
        # predict_on_batch, not predict(): one graph call with no per-call dataset and
        # callback set-up, which dominates for a single batch.
        with self._lock:
            out = self.keras_model.predict_on_batch(inputs)
        return to_predictions(
            np.asarray(out[GENDER_HEAD])[:n],
            np.asarray(out[PRODUCT_HEAD])[:n],
            gender_labels=self.gender_labels,
            product_labels=self.product_labels,
        )

    def warmup(self, batch_size: int = 1) -> None:
        """Run a dummy batch so graph tracing happens before the first real batch."""
        blank = np.zeros((batch_size, self.image_size, self.image_size, 3), dtype=np.uint8)
        self.predict(blank, [""] * batch_size)


def padded_length(n: int) -> int:
    """The batch length a batch of ``n`` is padded to: the next power of two."""
    return 1 << max(0, n - 1).bit_length()


def load_model(path: Path | str, *, version: str) -> TaggerModel:
    """Load the artifact folder ``path`` (checked first) as a :class:`TaggerModel`."""
    import keras

    info = read_artifact_info(path)
    try:
        # compile=False: inference needs no optimizer or losses. safe_mode (the default)
        # stays on: an artifact from storage must not be able to run arbitrary code.
        keras_model = keras.models.load_model(info.path / MODEL_FILE, compile=False)
    except Exception as e:
        raise ArtifactError(f"cannot load {info.path / MODEL_FILE}: {e}") from e
    _, sizes = _signature(keras_model)
    for head, head_labels in info.labels.items():
        if sizes.get(head) != len(head_labels):
            raise ArtifactError(
                f"artifact {info.path}: head {head!r} has {sizes.get(head)} outputs but "
                f"{LABELS_FILE} lists {len(head_labels)} labels"
            )
    model = TaggerModel(
        keras_model,
        version=version,
        gender_labels=info.gender_labels,
        product_labels=info.product_labels,
    )
    if model.image_size != info.image_size:
        raise ArtifactError(
            f"artifact {info.path}: model input is {model.image_size}px but "
            f"{CONFIG_FILE} says {info.image_size}px"
        )
    return model


def configure_tensorflow(*, memory_growth: bool, mixed_precision: bool) -> None:
    """Per-process TensorFlow set-up; call once, before any model is built or loaded."""
    import keras
    import tensorflow as tf

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


def _signature(model: keras.Model) -> tuple[set[str], dict[str, int]]:
    """Input names and {head: number of outputs} of a two-head model."""
    inputs = model.input
    outputs = model.output
    if not isinstance(inputs, dict) or IMAGE_INPUT not in inputs:
        raise ArtifactError(f"model has no named {IMAGE_INPUT!r} input")
    if not isinstance(outputs, dict) or set(outputs) != {GENDER_HEAD, PRODUCT_HEAD}:
        raise ArtifactError(f"model outputs must be a dict with {GENDER_HEAD!r}, {PRODUCT_HEAD!r}")
    return set(inputs), {head: int(t.shape[-1]) for head, t in outputs.items()}


def _check_labels(labels: Any, *, where: str) -> None:
    if not isinstance(labels, dict):
        raise ArtifactError(f"{where}: expected an object with 'gender' and 'product' lists")
    for head in (GENDER_HEAD, PRODUCT_HEAD):
        values = labels.get(head)
        if (
            not isinstance(values, list)
            or not values
            or not all(isinstance(v, str) and v for v in values)
        ):
            raise ArtifactError(f"{where}: {head!r} must be a non-empty list of label names")
        if len(set(values)) != len(values):
            raise ArtifactError(f"{where}: {head!r} labels are not unique")


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ArtifactError(f"{path}: not readable JSON ({e})") from e
    if not isinstance(data, dict):
        raise ArtifactError(f"{path}: expected a JSON object")
    return data


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(
        json.dumps(data, indent=2, sort_keys=True, default=_json_default) + "\n", encoding="utf-8"
    )
    os.replace(tmp, path)


def _json_default(value: Any) -> Any:
    # Training metrics often arrive as numpy scalars or arrays.
    if isinstance(value, np.generic | np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")
