"""Converting a Keras artifact for the OpenVINO runtime, and checking the result against
Keras before anything uses it.

The ``.keras`` artifact stays the one thing training produces; the converted model is
derived from it. Caption models are converted from the layer after the text vectoriser
(string operations do not convert): the caption becomes an int64 ``caption_ids`` input
and its vocabulary is written beside the model for ``tagger.tokenizer``.

A conversion folder holds::

    model.xml, model.bin   the OpenVINO IR (fp32 weights; precision is chosen at load)
    tokenizer.json         caption vocabulary and sequence length (caption models only)
    conversion.json        what was converted, the check's figures and its verdict

This module imports TensorFlow. Workers run it as a separate process
(``python -m tagger.convert``, see ``tagger.runtime``) so that a worker running the
converted model never loads TensorFlow at all.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tagger.artifacts import (
    CAPTION_INPUT,
    GENDER_HEAD,
    IMAGE_INPUT,
    MODEL_FILE,
    PRODUCT_HEAD,
    artifact_fingerprint,
    read_artifact_info,
)
from tagger.exceptions import ArtifactError
from tagger.openvino_model import CAPTION_IDS_INPUT, IR_FILE, TOKENIZER_FILE, compile_model
from tagger.tokenizer import SUPPORTED, CaptionTokenizer

if TYPE_CHECKING:
    import keras

REPORT_FILE = "conversion.json"

#: A conversion is used only if, on the check batch, the converted model picks the same
#: top class as Keras fp32 for at least this share of images, on each head...
MIN_AGREEMENT = 0.995
#: ...and no score differs from Keras's by more than this (fp32 differs by ~1e-7; bf16
#: keeps 8 bits of mantissa, so about 1% relative error through the network).
SCORE_TOLERANCE = {"fp32": 1e-3, "bf16": 0.05}
CHECK_BATCH = 64
CHECK_SEED = 20_261_130
#: Exit status of ``python -m tagger.convert`` when the check refuses the conversion.
REFUSED_EXIT = 3


@dataclass
class CheckResult:
    precision: str
    images: int
    agreement: dict[str, float]
    max_score_diff: dict[str, float]
    min_agreement: float
    tolerance: float

    @property
    def accepted(self) -> bool:
        return not self.problems()

    def problems(self) -> list[str]:
        out = []
        for head, share in self.agreement.items():
            if share < self.min_agreement:
                out.append(
                    f"{head}: top class agrees with Keras for {share:.1%} of {self.images} "
                    f"check images (needs {self.min_agreement:.1%})"
                )
        for head, diff in self.max_score_diff.items():
            if diff > self.tolerance:
                out.append(
                    f"{head}: a score differs from Keras by {diff:.4g} "
                    f"(tolerance {self.tolerance:g} at {self.precision})"
                )
        return out


def split_caption_model(model: keras.Model) -> tuple[keras.Model, CaptionTokenizer | None]:
    """The model from the image (and caption ids) on, and the tokenizer that feeds it."""
    import keras

    if CAPTION_INPUT not in model.input:
        return model, None
    vectorizers = [
        layer for layer in model.layers if isinstance(layer, keras.layers.TextVectorization)
    ]
    if len(vectorizers) != 1:
        raise ArtifactError(f"expected one TextVectorization layer, found {len(vectorizers)}")
    vectorizer = vectorizers[0]
    config = vectorizer.get_config()
    for key, want in SUPPORTED.items():
        if config.get(key) != want:
            raise ArtifactError(
                f"the caption vectoriser has {key}={config.get(key)!r}; the OpenVINO runtime "
                f"reproduces only {key}={want!r} (use TAGGER_RUNTIME=keras for this model)"
            )
    length = config.get("output_sequence_length")
    if not isinstance(length, int):
        raise ArtifactError("the caption vectoriser has no fixed output_sequence_length")
    tokenizer = CaptionTokenizer(
        vocabulary=[str(t) for t in vectorizer.get_vocabulary()], sequence_length=length
    )
    # A functional model may start from any tensor of the graph: the vectoriser's output.
    inner = keras.Model(
        inputs={IMAGE_INPUT: model.input[IMAGE_INPUT], CAPTION_IDS_INPUT: vectorizer.output},
        outputs=model.output,
    )
    return inner, tokenizer


def to_openvino(inner: keras.Model, *, image_size: int, sequence_length: int | None) -> Any:
    """An ``openvino.Model`` of ``inner`` with dynamic batch, inputs and outputs named."""
    import openvino as ov
    import tensorflow as tf

    # Named specs: the converted inputs take these names (with a ":0" suffix).
    spec = {IMAGE_INPUT: tf.TensorSpec([None, image_size, image_size, 3], tf.float32, IMAGE_INPUT)}
    if sequence_length is not None:
        spec[CAPTION_IDS_INPUT] = tf.TensorSpec(
            [None, sequence_length], tf.int64, CAPTION_IDS_INPUT
        )
    fn = tf.function(lambda inputs: inner(inputs, training=False), input_signature=[spec])
    ov_model = ov.convert_model(fn.get_concrete_function())
    for port in ov_model.inputs:
        # The TF frontend names inputs "image:0"; give them the plain names back.
        found = [n for n in spec if any(x.split(":")[0] == n for x in port.get_names())]
        if len(found) != 1:
            raise ArtifactError(f"cannot match converted input {port.get_names()} to {list(spec)}")
        port.get_tensor().set_names({found[0]})
    names = {n for port in ov_model.outputs for n in port.get_names()}
    if not {GENDER_HEAD, PRODUCT_HEAD} <= names:
        raise ArtifactError(f"converted model lost its head names (outputs: {sorted(names)})")
    return ov_model


def check_batch(
    image_size: int, tokenizer: CaptionTokenizer | None, n: int = CHECK_BATCH
) -> tuple[np.ndarray, list[str | None]]:
    """A fixed, seeded batch: smooth colour fields (not white noise, so the scores are
    not all near-ties) and captions drawn from the model's own vocabulary."""
    from PIL import Image

    rng = np.random.default_rng(CHECK_SEED)
    coarse = rng.uniform(0, 255, (n, 6, 6, 3)).astype(np.uint8)
    images = np.stack(
        [
            np.asarray(Image.fromarray(c).resize((image_size, image_size), Image.BICUBIC))
            for c in coarse
        ]
    )
    words = tokenizer.vocabulary[2:] if tokenizer else []
    captions: list[str | None] = []
    for i in range(n):
        if not words or i % 8 == 0:
            captions.append(None if i % 16 == 0 else "")
            continue
        k = int(rng.integers(1, tokenizer.sequence_length + 4)) if tokenizer else 0
        captions.append(" ".join(rng.choice(words, size=k)))
    return images, captions


def top_class_agreement(want: np.ndarray, got: np.ndarray, *, tolerance: float) -> float:
    """Share of rows where ``got``'s top class is also top in ``want``, counting classes
    that ``want`` scores within ``tolerance`` of its top as tied (an untrained model gives
    many classes the same score; which of them argmax picks is then numerical noise)."""
    rows = np.arange(len(want))
    picked = want[rows, got.argmax(1)]
    return float((picked >= want.max(1) - tolerance).mean())


def check_conversion(
    model: keras.Model, compiled: Any, tokenizer: CaptionTokenizer | None, *, precision: str
) -> CheckResult:
    """Keras fp32 and the compiled OpenVINO model on the check batch, head by head."""
    size = int(model.input[IMAGE_INPUT].shape[1])
    images, captions = check_batch(size, tokenizer)
    keras_in: dict[str, np.ndarray] = {IMAGE_INPUT: images.astype(np.float32)}
    ov_in: dict[str, np.ndarray] = {IMAGE_INPUT: images}  # uint8, as a worker passes it
    if tokenizer is not None:
        keras_in[CAPTION_INPUT] = np.array([c or "" for c in captions], dtype=str).reshape(-1, 1)
        ov_in[CAPTION_IDS_INPUT] = tokenizer.encode(captions)
    want = model.predict_on_batch(keras_in)
    got = compiled(ov_in)
    agreement, diff = {}, {}
    for head in (GENDER_HEAD, PRODUCT_HEAD):
        k = np.asarray(want[head], dtype=np.float64)
        o = np.asarray(got[compiled.output(head)], dtype=np.float64)
        agreement[head] = top_class_agreement(k, o, tolerance=SCORE_TOLERANCE[precision])
        diff[head] = float(np.abs(k - o).max())
    return CheckResult(
        precision=precision,
        images=len(images),
        agreement=agreement,
        max_score_diff=diff,
        min_agreement=MIN_AGREEMENT,
        tolerance=SCORE_TOLERANCE[precision],
    )


def convert_artifact(artifact: Path, out: Path, *, precision: str) -> CheckResult:
    """Convert the artifact folder into ``out`` (created) and check it; the report is
    written whatever the verdict, so a refused conversion is not retried per batch."""
    import keras
    import openvino as ov

    info = read_artifact_info(artifact)
    model = keras.models.load_model(info.path / MODEL_FILE, compile=False)
    inner, tokenizer = split_caption_model(model)
    ov_model = to_openvino(
        inner,
        image_size=info.image_size,
        sequence_length=tokenizer.sequence_length if tokenizer else None,
    )
    out.mkdir(parents=True, exist_ok=True)
    ov.save_model(ov_model, str(out / IR_FILE), compress_to_fp16=False)
    if tokenizer is not None:
        (out / TOKENIZER_FILE).write_text(json.dumps(tokenizer.to_dict()), encoding="utf-8")
    compiled = compile_model(out / IR_FILE, precision=precision, threads=0)
    result = check_conversion(model, compiled, tokenizer, precision=precision)
    report = {
        "artifact_fingerprint": artifact_fingerprint(info.path),
        "openvino": ov.__version__,
        "accepted": result.accepted,
        "problems": result.problems(),
        **asdict(result),
    }
    (out / REPORT_FILE).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tagger.convert",
        description="Convert a Keras artifact for OpenVINO and check it against Keras.",
    )
    parser.add_argument("artifact", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--precision", choices=sorted(SCORE_TOLERANCE), default="fp32")
    args = parser.parse_args(argv)
    try:
        result = convert_artifact(args.artifact, args.out, precision=args.precision)
    except ArtifactError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(json.dumps({"accepted": result.accepted, **asdict(result)}))
    if not result.accepted:
        print("refused: " + "; ".join(result.problems()), file=sys.stderr)
        return REFUSED_EXIT
    return 0


if __name__ == "__main__":
    sys.exit(main())
