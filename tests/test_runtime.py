"""Choosing the inference runtime and precision, converting an artifact for OpenVINO and
checking it against Keras (tagger/runtime.py, tagger/convert.py, tagger/openvino_model.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tagger.artifacts import artifact_fingerprint
from tagger.convert import CheckResult, top_class_agreement
from tagger.runtime import (
    REPORT_FILE,
    ConversionRefused,
    ModelLoader,
    choose_precision,
    choose_runtime,
    conversion_dir,
    cpu_flags,
    ensure_converted,
    ensure_converted_any,
    gpu_visible,
    precisions_to_try,
    worker_processes,
)
from tagger.settings import Settings

CAPTIONS = ["The lady wears a red dress.", None, "", "ÉCOLE dress!!", "word " * 80]


def test_auto_precision_tries_bf16_then_fp32_and_a_set_one_alone():
    """auto on a bf16 CPU tries bf16, then fp32; fp32 CPUs and a precision set by hand
    try one."""
    bf16 = {"avx512f", "avx512_bf16"}
    assert precisions_to_try("auto", flags=bf16) == ["bf16", "fp32"]
    assert precisions_to_try("auto", flags={"avx2"}) == ["fp32"]
    assert precisions_to_try("bf16", flags=bf16) == ["bf16"]
    assert precisions_to_try("fp32", flags=bf16) == ["fp32"]


def test_a_refused_bf16_conversion_falls_back_to_an_accepted_fp32_one(tmp_path, artifact):
    """With bf16 refused (remembered in the cache) and fp32 accepted, the fp32 folder is
    used; with bf16 alone to try, the refusal is raised, naming the precision."""
    fingerprint = artifact_fingerprint(Path(artifact))
    for precision, accepted in (("bf16", False), ("fp32", True)):
        folder = conversion_dir(tmp_path, fingerprint=fingerprint, precision=precision)
        folder.mkdir(parents=True)
        report = {"accepted": accepted, "problems": [] if accepted else ["product: a score"]}
        (folder / REPORT_FILE).write_text(json.dumps(report))
    path, precision = ensure_converted_any(
        Path(artifact), cache_dir=tmp_path, precisions=["bf16", "fp32"]
    )
    assert (path, precision) == (
        conversion_dir(tmp_path, fingerprint=fingerprint, precision="fp32"),
        "fp32",
    )
    with pytest.raises(ConversionRefused, match="at bf16 refused: product: a score"):
        ensure_converted_any(Path(artifact), cache_dir=tmp_path, precisions=["bf16"])


def test_auto_runtime_is_keras_on_a_gpu_and_openvino_on_a_cpu():
    """auto: TensorFlow where a GPU is visible, OpenVINO otherwise; explicit wins."""
    assert choose_runtime("auto", gpu=True) == "keras"
    assert choose_runtime("auto", gpu=False) == "openvino"
    assert choose_runtime("keras", gpu=False) == "keras"
    assert choose_runtime("openvino", gpu=True) == "openvino"


def test_auto_precision_is_bf16_only_with_native_bf16_instructions():
    """auto: bf16 with avx512_bf16 or amx_bf16, fp32 with AVX2 or AVX-512 alone."""
    assert choose_precision("auto", flags={"avx2", "avx512f", "avx512_bf16"}) == "bf16"
    assert choose_precision("auto", flags={"avx2", "amx_bf16"}) == "bf16"
    assert choose_precision("auto", flags={"avx2", "avx512f"}) == "fp32"
    assert choose_precision("fp32", flags={"amx_bf16"}) == "fp32"


def test_cpu_flags_read_from_cpuinfo_text():
    """The 'flags' line of /proc/cpuinfo is split into a set."""
    text = "processor\t: 0\nflags\t\t: fpu avx2 avx512_bf16\nbugs\t: none\n"
    assert cpu_flags(text) == {"fpu", "avx2", "avx512_bf16"}
    assert cpu_flags("no flags line") == set()


def test_no_gpu_when_cuda_visible_devices_hides_them():
    """CUDA_VISIBLE_DEVICES='' or '-1' means no GPU, whatever the driver shows."""
    assert gpu_visible({"CUDA_VISIBLE_DEVICES": ""}) is False
    assert gpu_visible({"CUDA_VISIBLE_DEVICES": "-1"}) is False


def test_worker_processes_default_to_two_on_openvino_and_one_on_keras():
    """TAGGER_WORKER_CONCURRENCY=0: 2 pool processes on OpenVINO, 1 on TensorFlow; a set
    value wins."""
    assert worker_processes(Settings(runtime="openvino", worker_concurrency=0)) == 2
    assert worker_processes(Settings(runtime="keras", worker_concurrency=0)) == 1
    assert worker_processes(Settings(runtime="openvino", worker_concurrency=3)) == 3


def test_pool_processes_share_every_core_unless_threads_are_set():
    """Pool processes each may use every core (0), since they mostly take turns at the
    model; a set TAGGER_INFERENCE_THREADS wins."""
    assert ModelLoader(Settings(runtime="openvino"), processes=2).inference_threads == 0
    fixed = Settings(runtime="openvino", inference_threads=3)
    assert ModelLoader(fixed, processes=2).inference_threads == 3


def test_agreement_counts_ties_within_tolerance_as_agreeing():
    """A different argmax among classes Keras scores within the tolerance is a tie."""
    want = np.array([[0.5, 0.5, 0.1], [0.9, 0.2, 0.1], [0.1, 0.2, 0.9]])
    got = np.array([[0.4, 0.6, 0.1], [0.1, 0.9, 0.1], [0.1, 0.2, 0.9]])
    assert top_class_agreement(want, got, tolerance=1e-3) == pytest.approx(2 / 3)


def test_check_result_names_each_failing_head():
    """A refused check says which head, the share, and the score difference."""
    result = CheckResult(
        precision="bf16",
        images=64,
        agreement={"gender": 1.0, "product": 0.97},
        max_score_diff={"gender": 0.01, "product": 0.2},
        min_agreement=0.995,
        tolerance=0.05,
    )
    problems = "; ".join(result.problems())
    assert not result.accepted
    assert "product: top class agrees with Keras for 97.0%" in problems
    assert "differs from Keras by 0.2" in problems and "gender" not in problems


@pytest.fixture(scope="module")
def converted(tmp_path_factory, artifact):
    """The session's 32 px caption artifact converted once (a real subprocess)."""
    cache = tmp_path_factory.mktemp("ov-cache")
    return (
        Path(artifact),
        cache,
        ensure_converted(Path(artifact), cache_dir=cache, precision="fp32"),
    )


@pytest.mark.slow
def test_converted_caption_model_matches_keras(converted):
    """Same top classes and scores within 1e-4 as Keras, captions tokenised outside the
    graph (odd and over-long captions included); the report records the check."""
    from tagger.artifacts import read_artifact_info
    from tagger.model import load_model
    from tagger.openvino_model import load_openvino

    path, _, folder = converted
    report = json.loads((folder / REPORT_FILE).read_text())
    assert report["accepted"] and report["agreement"] == {"gender": 1.0, "product": 1.0}
    fast = load_openvino(
        folder, info=read_artifact_info(path), version="v", precision="fp32", threads=0
    )
    slow = load_model(path, version="v")
    assert fast.uses_text and fast.runtime == "openvino"
    images = np.random.default_rng(3).integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
    for a, b in zip(fast.predict(images, CAPTIONS), slow.predict(images, CAPTIONS), strict=True):
        assert (a.gender, a.product_type) == (b.gender, b.product_type)
        for head in ("gender", "product"):
            want, got = b.scores[head], a.scores[head]
            assert max(abs(want[k] - got[k]) for k in want) < 1e-4


@pytest.mark.slow
def test_openvino_takes_uint8_and_slices_batches_by_rows(converted):
    """The graph's image input is uint8 (no float copy per batch); a batch cut into the
    plugin's streams gives each row the scores it gets alone, whatever the batch size."""
    import openvino as ov

    from tagger.artifacts import IMAGE_INPUT, read_artifact_info
    from tagger.openvino_model import load_openvino

    path, _, folder = converted
    model = load_openvino(
        folder, info=read_artifact_info(path), version="v", precision="fp32", threads=0
    )
    assert model._compiled.input(IMAGE_INPUT).get_element_type() == ov.Type.u8
    images = np.random.default_rng(5).integers(0, 256, (7, 32, 32, 3), dtype=np.uint8)
    captions = [*CAPTIONS, "a blue shirt", None]
    alone = [model.predict(images[i : i + 1], captions[i : i + 1])[0] for i in range(7)]
    for n in range(1, 8):
        together = model.predict(images[:n], captions[:n])
        for a, b in zip(together, alone[:n], strict=True):
            assert a.product_type == b.product_type and a.gender == b.gender
            assert (
                max(
                    abs(a.scores["product"][k] - b.scores["product"][k])
                    for k in a.scores["product"]
                )
                < 1e-5
            )


@pytest.mark.slow
def test_shared_host_turns_thread_pinning_off(converted):
    """Several pool processes on one host: pinning off (each would pin its threads to
    the same first cores); the thread count and the precision are set as asked."""
    from tagger.openvino_model import IR_FILE, compile_model

    _, _, folder = converted
    shared = compile_model(folder / IR_FILE, precision="fp32", threads=1, shared=True)
    assert shared.get_property("ENABLE_CPU_PINNING") is False
    assert shared.get_property("INFERENCE_NUM_THREADS") == 1
    assert str(shared.get_property("INFERENCE_PRECISION_HINT")) == "<Type: 'float32'>"


@pytest.mark.slow
def test_second_request_uses_the_cache_without_converting(converted, monkeypatch):
    """A converted artifact is found by fingerprint and precision: no new subprocess."""
    path, cache, folder = converted

    def no_subprocess(*args, **kwargs):
        raise AssertionError("converted again")

    monkeypatch.setattr(subprocess, "run", no_subprocess)
    assert ensure_converted(path, cache_dir=cache, precision="fp32") == folder


def _refused(path: Path, cache: Path) -> None:
    """Leave in the cache what a refused conversion leaves: a report that says so."""
    from tagger.artifacts import artifact_fingerprint

    folder = conversion_dir(cache, fingerprint=artifact_fingerprint(path), precision="bf16")
    folder.mkdir(parents=True)
    report = {"accepted": False, "problems": ["product: top class agrees for 90.0%"]}
    (folder / REPORT_FILE).write_text(json.dumps(report))


@pytest.mark.slow
def test_refused_conversion_falls_back_to_keras(artifact, tmp_path):
    """A worker whose conversion was refused runs that version on Keras instead."""
    _refused(Path(artifact), tmp_path)
    with pytest.raises(ConversionRefused, match=r"90\.0%"):
        ensure_converted(Path(artifact), cache_dir=tmp_path, precision="bf16")
    settings = Settings(runtime="openvino", precision="bf16", model_cache_dir=tmp_path)
    model = ModelLoader(settings).load(Path(artifact), version="v1")
    assert model.runtime == "keras" and model.version == "v1"


@pytest.mark.slow
def test_register_is_refused_when_the_conversion_is_refused(
    artifact, settings_env, db, tagger_cli, tmp_path
):
    """`model register` on an OpenVINO host refuses an artifact whose conversion fails
    the check, says why, and registers nothing; on Keras it registers."""
    cache = Path(os.environ["TAGGER_MODEL_CACHE_DIR"])
    _refused(Path(artifact), cache)
    env = {**os.environ, "TAGGER_RUNTIME": "openvino", "TAGGER_PRECISION": "bf16"}
    refused = tagger_cli(env, "model", "register", artifact, "--version", "bad")
    assert refused.returncode != 0
    assert "refused" in refused.stderr and "90.0%" in refused.stderr
    listed = tagger_cli(env, "model", "list", "--format", "json")
    assert json.loads(listed.stdout) == []
    ok = tagger_cli({**env, "TAGGER_RUNTIME": "keras"}, "model", "register", artifact)
    assert ok.returncode == 0, ok.stderr


def test_convert_module_refuses_with_its_own_exit_status(tmp_path):
    """`python -m tagger.convert` on a folder that is not an artifact exits 1 with the
    reason (no traceback); 3 is kept for a refused check."""
    done = subprocess.run(
        [sys.executable, "-m", "tagger.convert", str(tmp_path), str(tmp_path / "out")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 1 and "incomplete" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.slow
def test_worker_on_openvino_never_loads_tensorflow(converted):
    """Loading and running a converted model (as a CPU worker does) imports neither
    TensorFlow nor Keras: the conversion ran in its own process."""
    path, cache, _ = converted
    script = f"""
import json, sys
from pathlib import Path
import numpy as np
from tagger.runtime import ModelLoader
from tagger.settings import Settings
s = Settings(runtime="openvino", precision="fp32", model_cache_dir=Path({str(cache)!r}))
m = ModelLoader(s).load(Path({str(path)!r}), version="v")
m.predict(np.zeros((2, 32, 32, 3), np.uint8), ["a red dress", None])
print(json.dumps([m.runtime, sorted(k for k in sys.modules if k.split(".")[0] in
                  ("tensorflow", "keras"))]))
"""
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300, check=True
    )
    runtime, loaded = json.loads(out.stdout.splitlines()[-1])
    assert runtime == "openvino" and loaded == []
