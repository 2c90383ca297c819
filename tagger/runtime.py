"""Which inference runtime a worker uses, and loading a model version on it.

``TAGGER_RUNTIME=auto`` means TensorFlow (Keras) where an NVIDIA GPU is visible and
OpenVINO on a CPU; ``TAGGER_PRECISION=auto`` means bf16 where the CPU has native bf16
instructions and the model's bf16 conversion passes the check, fp32 otherwise (some
models lose too much in bf16: the demo's, trained briefly from a random backbone, moved a
score by 0.16). On OpenVINO the Keras artifact is converted once per host
into the model cache, keyed by the artifact's fingerprint, the precision and the OpenVINO
version, in a separate process (``python -m tagger.convert``), so the worker itself never
imports TensorFlow. A conversion the check refuses is remembered (not retried per batch),
and the worker falls back to Keras for that version, saying so in its log.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from tagger.artifacts import artifact_fingerprint, read_artifact_info

# The converter's constants: importing tagger.convert loads no TensorFlow (its functions
# import it), and the conversion itself runs in a child process.
from tagger.convert import REFUSED_EXIT, REPORT_FILE
from tagger.exceptions import ArtifactError
from tagger.model import LoadedModel
from tagger.settings import Settings

log = logging.getLogger(__name__)

CONVERSION_TIMEOUT = 900
BF16_FLAGS = {"avx512_bf16", "amx_bf16"}


class ConversionRefused(ArtifactError):
    """The converted model disagrees with Keras on the check batch."""


def gpu_visible(environ: dict[str, str] | None = None) -> bool:
    """An NVIDIA GPU this process may use, found without importing TensorFlow."""
    environ = os.environ if environ is None else environ
    if environ.get("CUDA_VISIBLE_DEVICES", "x").strip() in {"", "-1"}:
        return False
    gpus = Path("/proc/driver/nvidia/gpus")
    return gpus.is_dir() and any(gpus.iterdir())


def cpu_flags(cpuinfo: str | None = None) -> set[str]:
    """The CPU's feature flags (Linux /proc/cpuinfo; empty elsewhere)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
        except OSError:
            return set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return set(value.split())
    return set()


def choose_runtime(setting: str, *, gpu: bool) -> str:
    if setting != "auto":
        return setting
    # TensorFlow with mixed precision is the GPU path; OpenVINO's CPU plugin is the fast one
    # on CPUs (benchmarks/pipeline.py measures both).
    return "keras" if gpu else "openvino"


def choose_precision(setting: str, *, flags: set[str]) -> str:
    if setting != "auto":
        return setting
    # Emulated bf16 is slower than fp32: only native instructions make it pay.
    return "bf16" if flags & BF16_FLAGS else "fp32"


def worker_processes(settings: Settings) -> int:
    """Pool processes of one `tagger worker`: the setting, or 1 on TensorFlow (it takes a
    whole GPU) and 2 on OpenVINO, so that one process fetches and decodes a batch while
    the other runs the model (benchmarks/pipeline.py compares the choices; the prefork
    pool keeps the time limits that the threads pool does not enforce)."""
    if settings.worker_concurrency:
        return settings.worker_concurrency
    return 1 if choose_runtime(settings.runtime, gpu=gpu_visible()) == "keras" else 2


def conversion_dir(cache_dir: Path, *, fingerprint: str, precision: str) -> Path:
    import openvino

    version = openvino.__version__.split("-")[0]
    return Path(cache_dir) / "openvino" / f"{fingerprint}-{precision}-ov{version}"


def ensure_converted(artifact: Path, *, cache_dir: Path, precision: str) -> Path:
    """The checked conversion folder of ``artifact``, converting it first if need be.

    Raises ConversionRefused (remembered in the cache) when the check fails, and
    ArtifactError when the conversion itself fails (not remembered: it may be memory).
    """
    target = conversion_dir(
        cache_dir, fingerprint=artifact_fingerprint(artifact), precision=precision
    )
    if not (target / REPORT_FILE).is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
        try:
            _convert_in_subprocess(artifact, staging / "out", precision=precision)
            try:
                os.rename(staging / "out", target)
            except OSError:
                # Another process on this host finished the same conversion first.
                if not (target / REPORT_FILE).is_file():
                    raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    report = json.loads((target / REPORT_FILE).read_text(encoding="utf-8"))
    if not report.get("accepted"):
        raise ConversionRefused(
            f"OpenVINO conversion of {artifact} at {precision} refused: "
            + "; ".join(report.get("problems") or ["no reason recorded"])
        )
    return target


def _convert_in_subprocess(artifact: Path, out: Path, *, precision: str) -> None:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    command = [sys.executable, "-m", "tagger.convert", str(artifact), str(out)]
    try:
        done = subprocess.run(
            [*command, "--precision", precision],
            env=env,
            capture_output=True,
            text=True,
            timeout=CONVERSION_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired as e:
        raise ArtifactError(f"converting {artifact} took over {CONVERSION_TIMEOUT} s") from e
    if done.returncode not in (0, REFUSED_EXIT):
        tail = " | ".join(done.stderr.strip().splitlines()[-3:])
        raise ArtifactError(f"converting {artifact} for OpenVINO failed: {tail}")


def precisions_to_try(setting: str, *, flags: set[str]) -> list[str]:
    """The precisions to convert at, best first: ``auto`` falls back from bf16 to fp32
    when the bf16 conversion is refused; a precision set by hand is the only one tried."""
    chosen = choose_precision(setting, flags=flags)
    return [chosen, "fp32"] if setting == "auto" and chosen != "fp32" else [chosen]


def ensure_converted_any(
    artifact: Path, *, cache_dir: Path, precisions: list[str]
) -> tuple[Path, str]:
    """The first of ``precisions`` whose checked conversion is accepted, and its folder;
    the last refusal when none is."""
    for n, precision in enumerate(precisions):
        try:
            return ensure_converted(artifact, cache_dir=cache_dir, precision=precision), precision
        except ConversionRefused as e:
            if n == len(precisions) - 1:
                raise
            log.warning("%s; trying %s", e, precisions[n + 1])
    raise ValueError("no precision to convert at")


def check_conversion(path: Path, *, settings: Settings) -> Path | None:
    """Convert and check ``path`` now if these settings put workers on OpenVINO (the
    conversion is cached, so this host's workers start from it); None on Keras."""
    if choose_runtime(settings.runtime, gpu=gpu_visible()) != "openvino":
        return None
    precisions = precisions_to_try(settings.precision, flags=cpu_flags())
    return ensure_converted_any(path, cache_dir=settings.model_cache_dir, precisions=precisions)[0]


class ModelLoader:
    """Loads model versions for one worker process on the runtime its settings choose."""

    def __init__(self, settings: Settings, *, processes: int = 1) -> None:
        self.settings = settings
        self.processes = processes
        self.runtime = choose_runtime(settings.runtime, gpu=gpu_visible())
        self.precision = choose_precision(settings.precision, flags=cpu_flags())
        self._tf_configured = False

    @property
    def inference_threads(self) -> int:
        """The setting (0: every core). Pool processes do not split the cores: while one
        fetches and decodes, the other's model call has the whole machine, and two calls
        at once on all cores cost no more than one each on half (measured)."""
        return self.settings.inference_threads

    def load(self, path: Path, *, version: str) -> LoadedModel:
        """Load the artifact folder ``path`` as ``version``, warmed up for a usual batch."""
        model: LoadedModel | None = None
        if self.runtime == "openvino":
            try:
                model = self._load_openvino(path, version=version)
            except ConversionRefused as e:
                log.error("%s; running model %s on Keras instead", e, version)
        if model is None:
            model = self._load_keras(path, version=version)
        model.warmup(self.settings.batch_size)
        return model

    def _load_openvino(self, path: Path, *, version: str) -> LoadedModel:
        from tagger.openvino_model import load_openvino

        converted, precision = ensure_converted_any(
            path,
            cache_dir=self.settings.model_cache_dir,
            precisions=precisions_to_try(self.settings.precision, flags=cpu_flags()),
        )
        return load_openvino(
            converted,
            info=read_artifact_info(path),
            version=version,
            precision=precision,
            threads=self.inference_threads,
            shared=self.processes > 1,
        )

    def _load_keras(self, path: Path, *, version: str) -> LoadedModel:
        # Imported here: TensorFlow must first be imported in the worker's child process,
        # after the fork, and not at all by a worker on OpenVINO.
        from tagger.model import configure_tensorflow, load_model

        if not self._tf_configured:
            configure_tensorflow(
                memory_growth=self.settings.tf_memory_growth,
                mixed_precision=self.settings.mixed_precision,
                threads=self.inference_threads,
            )
            self._tf_configured = True
        return load_model(path, version=version)
