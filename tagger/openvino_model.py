"""The OpenVINO runtime: a converted artifact (``tagger.convert``) run on the CPU.

Imports OpenVINO and numpy only, never TensorFlow: a CPU worker on this runtime loads in
a fraction of a second and holds far less memory than one running Keras. Captions are
tokenised in Python (``tagger.tokenizer``) because string operations do not convert.
"""

from __future__ import annotations

import itertools
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


def compile_model(path: Path, *, precision: str, threads: int, shared: bool = False) -> Any:
    """The IR at ``path`` compiled for the CPU.

    The precision is always set: left alone, OpenVINO picks bf16 by itself on CPUs that
    have it, which would make "fp32" a lie. THROUGHPUT, not LATENCY: a batch is split
    over the plugin's streams (``OpenVinoModel``), each on its own cores, which measured
    1.5x one stream using every core for EfficientNet's many small layers on 2 cores.

    ``shared``: other processes of the same worker run models on this host's cores at
    the same time. OpenVINO pins its threads to cores counted from the first, so two
    processes with one thread each both pin to core 0 and run at half speed (measured);
    unpinned, the operating system spreads them.

    The image input takes the decoded uint8 pixels: the conversion to float is added to
    the graph (PrePostProcessor), where the plugin's threads do it, exact for 0..255,
    instead of a numpy cast per batch in Python that wrote a float copy four times the
    batch's size (about 5% of the model call's CPU at 224 px, measured).
    """
    import openvino as ov

    config: dict[str, Any] = {
        "INFERENCE_PRECISION_HINT": _OV_PRECISION[precision],
        "PERFORMANCE_HINT": "THROUGHPUT",
    }
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
    if shared:
        config["ENABLE_CPU_PINNING"] = False
    core = ov.Core()
    try:
        model = core.read_model(str(path))
        preprocess = ov.preprocess.PrePostProcessor(model)
        preprocess.input(IMAGE_INPUT).tensor().set_element_type(ov.Type.u8)
        return core.compile_model(preprocess.build(), "CPU", config)
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
        import openvino as ov

        super().__init__(
            version=version,
            gender_labels=info.gender_labels,
            product_labels=info.product_labels,
            image_size=info.image_size,
            uses_text=tokenizer is not None,
            calibration=info.calibration,
        )
        self.precision = precision
        self.tokenizer = tokenizer
        self._compiled = compiled
        self._outputs = [compiled.output(head) for head in (GENDER_HEAD, PRODUCT_HEAD)]
        # One request per stream: a batch is cut into that many slices that run at once.
        self.streams = max(1, int(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")))
        self._queue = ov.AsyncInferQueue(compiled, self.streams)
        self._queue.set_callback(self._collect)
        self._results: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def __repr__(self) -> str:
        threads = self._compiled.get_property("INFERENCE_NUM_THREADS")
        return (
            f"OpenVinoModel(version={self.version!r}, {self.precision}, "
            f"{threads} thread{'s' if threads != 1 else ''}, {self.streams} stream(s), "
            f"image_size={self.image_size}, uses_text={self.uses_text})"
        )

    def _collect(self, request: Any, index: int) -> None:
        # Copies: a request's output buffers are reused by its next run.
        gender, product = (np.array(request.get_tensor(port).data) for port in self._outputs)
        self._results[index] = (gender, product)

    def _scores(
        self, images: np.ndarray, captions: list[str | None]
    ) -> tuple[np.ndarray, np.ndarray]:
        # No padding to a fixed batch length: OpenVINO has no graph trace to amortise.
        # The graph takes uint8 (compile_model); decoded images already are, so this and
        # the slices below (contiguous row ranges) are views, not copies.
        pixels = np.ascontiguousarray(images, dtype=np.uint8)
        ids = self.tokenizer.encode(captions) if self.tokenizer is not None else None
        bounds = np.linspace(0, len(pixels), self.streams + 1).astype(int)
        slices = [slice(a, b) for a, b in itertools.pairwise(bounds) if b > a]
        self._results = {}
        for index, rows in enumerate(slices):
            inputs = {IMAGE_INPUT: pixels[rows]}
            if ids is not None:
                inputs[CAPTION_IDS_INPUT] = ids[rows]
            self._queue.start_async(inputs, index)
        self._queue.wait_all()
        if len(self._results) != len(slices):
            raise RuntimeError(f"OpenVINO returned {len(self._results)} of {len(slices)} slices")
        parts = [self._results[i] for i in range(len(slices))]
        return np.concatenate([g for g, _ in parts]), np.concatenate([p for _, p in parts])


def load_openvino(
    converted: Path,
    *,
    info: ArtifactInfo,
    version: str,
    precision: str,
    threads: int,
    shared: bool = False,
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
    compiled = compile_model(
        converted / IR_FILE, precision=precision, threads=threads, shared=shared
    )
    return OpenVinoModel(
        compiled, version=version, info=info, tokenizer=tokenizer, precision=precision
    )
