"""The OpenVINO runtime: a converted artifact (``tagger.convert``) run on the CPU.

Imports OpenVINO and numpy only, never TensorFlow: a CPU worker on this runtime loads in
a fraction of a second and holds far less memory than one running Keras. Captions are
tokenised in Python (``tagger.tokenizer``) because string operations do not convert.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from tagger.artifacts import GENDER_HEAD, IMAGE_INPUT, PRODUCT_HEAD, ArtifactInfo
from tagger.exceptions import ArtifactError
from tagger.model import LoadedModel
from tagger.tokenizer import CaptionTokenizer

log = logging.getLogger(__name__)

#: Input name of the token ids in a converted caption model (``tagger.convert``).
CAPTION_IDS_INPUT = "caption_ids"
IR_FILE = "model.xml"
TOKENIZER_FILE = "tokenizer.json"

#: OpenVINO's names for tagger's precisions.
_OV_PRECISION = {"fp32": "f32", "bf16": "bf16"}


def compile_model(path: Path, *, precision: str, threads: int) -> Any:
    """The IR at ``path`` compiled for the CPU.

    The precision is always set: left alone, OpenVINO picks bf16 by itself on CPUs that
    have it, which would make "fp32" a lie. LATENCY: one stream using every core for
    the one batch in flight, which is what a worker has; THROUGHPUT only pays with
    several requests in flight at once.
    """
    import openvino as ov

    config: dict[str, Any] = {
        "INFERENCE_PRECISION_HINT": _OV_PRECISION[precision],
        "PERFORMANCE_HINT": "LATENCY",
    }
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
    core = ov.Core()
    try:
        return core.compile_model(core.read_model(str(path)), "CPU", config)
    except RuntimeError as e:
        raise ArtifactError(f"OpenVINO cannot load {path}: {e}") from e


class OpenVinoModel(LoadedModel):
    """A converted model version on OpenVINO's CPU plugin."""

    runtime = "openvino"

    def __init__(
        self,
        compiled: Any,
        *,
        version: str,
        info: ArtifactInfo,
        tokenizer: CaptionTokenizer | None,
        precision: str,
    ) -> None:
        super().__init__(
            version=version,
            gender_labels=info.gender_labels,
            product_labels=info.product_labels,
            image_size=info.image_size,
            uses_text=tokenizer is not None,
        )
        self.precision = precision
        self.tokenizer = tokenizer
        self._compiled = compiled
        # One request, reused: a worker runs one model call at a time (the lock).
        self._request = compiled.create_infer_request()
        self._outputs = {head: compiled.output(head) for head in (GENDER_HEAD, PRODUCT_HEAD)}

    def _scores(
        self, images: np.ndarray, captions: list[str | None]
    ) -> tuple[np.ndarray, np.ndarray]:
        # No padding to a fixed batch length: OpenVINO has no graph trace to amortise.
        inputs: dict[str, np.ndarray] = {IMAGE_INPUT: images.astype(np.float32)}
        if self.tokenizer is not None:
            inputs[CAPTION_IDS_INPUT] = self.tokenizer.encode(captions)
        result = self._request.infer(inputs)
        # Copies: the request's output buffers are reused by the next call.
        return (
            np.array(result[self._outputs[GENDER_HEAD]]),
            np.array(result[self._outputs[PRODUCT_HEAD]]),
        )


def load_openvino(
    converted: Path, *, info: ArtifactInfo, version: str, precision: str, threads: int
) -> OpenVinoModel:
    """Load a checked conversion folder of the artifact ``info``."""
    tokenizer = None
    if (converted / TOKENIZER_FILE).is_file():
        try:
            data = json.loads((converted / TOKENIZER_FILE).read_text(encoding="utf-8"))
            tokenizer = CaptionTokenizer.from_dict(data)
        except (OSError, ValueError) as e:
            raise ArtifactError(f"{converted / TOKENIZER_FILE}: {e}") from e
    if bool(info.config.get("use_text")) != (tokenizer is not None):
        raise ArtifactError(f"{converted}: caption input does not match the artifact's config")
    compiled = compile_model(converted / IR_FILE, precision=precision, threads=threads)
    return OpenVinoModel(
        compiled, version=version, info=info, tokenizer=tokenizer, precision=precision
    )
