"""The model artifact: the contract between the trainer (``train``) and the service.

This module owns the format, so neither side needs the other's code: the input and head
names, the file layout, saving, reading and checking, and the fingerprint. Fetching an
artifact (a local folder, or an ``s3://`` prefix downloaded into the model cache) is
``tagger.artifact_cache``; loading and running one is ``tagger.model``. An artifact is a
folder (locally, or under an ``s3://`` prefix)::

    model.keras     Keras 3 native format (architecture, weights, text vocabulary)
    labels.json     {"gender": [...], "product": [...]}: column order of the two heads
    config.json     the architecture's hyper-parameters as a dict, plus the format version
    metadata.json   created_at, tagger/tensorflow/keras versions, name, metrics
    metrics.json    (optional) evaluation figures
    calibration.json (optional) per-head score calibration (``tagger.calibration``); an
                    artifact without it scores with its raw sigmoids
    review.json     (optional) per-class review thresholds (``tagger.review``): the
                    confidence under which a tag needs a person's look

The Keras model has named inputs, ``image`` (raw 0-255 RGB pixels as float32, S x S x 3:
the model rescales them itself) and ``caption`` (one string per image, only when the
model reads text), and named outputs ``gender`` and ``product`` (sigmoid scores in the
order of labels.json).

TensorFlow is imported only where a model is saved, and nothing here imports boto3, so
reading an artifact's labels and fingerprint (``tagger model register``) and importing
this module from the trainer stay cheap.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

import tagger
from tagger.calibration import Calibration
from tagger.exceptions import ArtifactError
from tagger.review import ReviewThresholds

if TYPE_CHECKING:
    import keras

#: Input names the model is fed (``tagger.model.LoadedModel.predict``).
IMAGE_INPUT = "image"
CAPTION_INPUT = "caption"
#: Output (head) names; also the keys of the artifact's labels.json.
GENDER_HEAD = "gender"
PRODUCT_HEAD = "product"

MODEL_FILE = "model.keras"
LABELS_FILE = "labels.json"
CONFIG_FILE = "config.json"
METADATA_FILE = "metadata.json"
METRICS_FILE = "metrics.json"
CALIBRATION_FILE = "calibration.json"
REVIEW_FILE = "review.json"
REQUIRED_FILES = (MODEL_FILE, LABELS_FILE, CONFIG_FILE, METADATA_FILE)
ARTIFACT_FORMAT = 1


class SupportsToDict(Protocol):
    """A config object that can describe itself as a dict (the trainer's ModelConfig)."""

    def to_dict(self) -> dict[str, Any]: ...


def save_artifact(
    model: keras.Model,
    path: Path | str,
    *,
    config: Mapping[str, Any] | SupportsToDict,
    gender_labels: Sequence[str],
    product_labels: Sequence[str],
    metrics: dict[str, Any] | None = None,
    name: str | None = None,
    calibration: Calibration | None = None,
    review: ReviewThresholds | None = None,
) -> Path:
    """Write ``model`` and its labels, config and metadata (and, given them, its
    calibration and review thresholds) to the folder ``path``.

    ``config`` is a mapping, or anything with a ``to_dict()`` (duck-typed, so the
    service does not depend on the trainer's config class).
    """
    import keras
    import tensorflow as tf

    path = Path(path)
    labels = {GENDER_HEAD: list(gender_labels), PRODUCT_HEAD: list(product_labels)}
    _check_labels(labels, where="labels")
    if review is not None:
        _check_review(review, labels, where="review thresholds")
    inputs, sizes = model_signature(model)
    for head, head_labels in labels.items():
        if sizes.get(head) != len(head_labels):
            raise ArtifactError(
                f"model head {head!r} has {sizes.get(head)} outputs but "
                f"{len(head_labels)} labels were given"
            )
    cfg = dict(config) if isinstance(config, Mapping) else dict(config.to_dict())
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
    if calibration is not None:
        unknown = {*calibration.heads, *calibration.uncaptioned} - set(labels)
        if unknown:
            raise ArtifactError(f"calibration for unknown heads {sorted(unknown)}")
        _write_json(path / CALIBRATION_FILE, calibration.to_dict())
    else:
        # Re-saving into a folder must not leave an older model's calibration behind.
        (path / CALIBRATION_FILE).unlink(missing_ok=True)
    if review is not None:
        _write_json(path / REVIEW_FILE, review.to_dict())
    else:
        (path / REVIEW_FILE).unlink(missing_ok=True)
    _write_json(path / LABELS_FILE, labels)
    return path


def artifact_fingerprint(path: Path | str) -> str:
    """First 12 hex digits of sha256(labels.json bytes + model.keras bytes [+
    calibration.json bytes] [+ review.json bytes], each optional file when there is one).

    Used as the default model version id: the same files always give the same id, and
    any change to the weights, the label order, the calibration (which changes every
    stored score) or the review thresholds (which change which tags need review) gives a
    new one. An artifact without calibration or review thresholds keeps the id it had
    before they existed.
    """
    path = Path(path)
    digest = hashlib.sha256()
    fnames = [LABELS_FILE, MODEL_FILE]
    fnames += [f for f in (CALIBRATION_FILE, REVIEW_FILE) if (path / f).is_file()]
    for fname in fnames:
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
    #: None for an artifact without calibration.json: its scores are used as they are
    calibration: Calibration | None = None
    #: None for an artifact without review.json: no thresholds of its own
    review: ReviewThresholds | None = None

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
    calibration = _read_calibration(path / CALIBRATION_FILE, {GENDER_HEAD, PRODUCT_HEAD})
    review = _read_review(path / REVIEW_FILE, labels)
    return ArtifactInfo(
        path=path,
        labels={GENDER_HEAD: labels[GENDER_HEAD], PRODUCT_HEAD: labels[PRODUCT_HEAD]},
        config=config,
        metadata=metadata,
        metrics=metrics,
        calibration=calibration,
        review=review,
    )


def _read_calibration(path: Path, heads: set[str]) -> Calibration | None:
    if not path.is_file():
        return None
    try:
        calibration = Calibration.from_dict(_read_json(path))
    except ValueError as e:
        raise ArtifactError(f"{path}: {e}") from e
    unknown = {*calibration.heads, *calibration.uncaptioned} - heads
    if unknown:
        raise ArtifactError(f"{path}: calibration for unknown heads {sorted(unknown)}")
    return calibration


def _read_review(path: Path, labels: dict[str, list[str]]) -> ReviewThresholds | None:
    if not path.is_file():
        return None
    try:
        review = ReviewThresholds.from_dict(_read_json(path))
    except ValueError as e:
        raise ArtifactError(f"{path}: {e}") from e
    _check_review(review, labels, where=str(path))
    return review


def _check_review(review: ReviewThresholds, labels: dict[str, list[str]], *, where: str) -> None:
    """Every class named has a threshold of a label of its head (a subset is fine: a
    class without one never needs review)."""
    for head in (GENDER_HEAD, PRODUCT_HEAD):
        unknown = set(review.head(head)) - set(labels[head])
        if unknown:
            raise ArtifactError(f"{where}: {head} thresholds for unknown classes {sorted(unknown)}")


def model_signature(model: keras.Model) -> tuple[set[str], dict[str, int]]:
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
