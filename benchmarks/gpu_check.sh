#!/usr/bin/env bash
# GPU check for tagger: run on a machine with an NVIDIA GPU, from the repository root:
#
#   bash benchmarks/gpu_check.sh     # prints everything; also to $OUT/gpu_check.log if set
#
# (Through this workplace's device tool: run(command="bash benchmarks/gpu_check.sh",
# timeout_s=330); the working tree travels, benchmarks/pipeline.py with it.)
#
# In this order, each step under `timeout`, the whole under GPU_CHECK_BUDGET seconds (285,
# i.e. < 5 min): the nvidia-smi summary; a venv with tagger installed; which dependencies
# import; TensorFlow sees the GPU (and a matmul's TFLOP/s on it); then the model benchmark
# benchmarks/pipeline.py with TAGGER_RUNTIME=keras, in float32 and with
# TAGGER_MIXED_PRECISION=true. End to end only where Postgres and Redis answer on
# 127.0.0.1 (as for the tests); otherwise it says so and runs --model-only.
#
# No package registry? (This workplace's lent H200 machine reaches none, and its Python
# has no TensorFlow, Keras or pydantic-settings: /work/.library/device/KINDS.md.) Then the
# venv sees the machine's own Python packages, tagger is installed without dependencies,
# wheels in GPU_CHECK_WHEELS (default .whl/, the device tool's carry convention) are
# installed first, and the steps that need what is missing are skipped with the reason.
# TensorFlow cannot be carried there: its wheel plus CUDA's (~3 GB) exceed a call's 64 MiB.
#
# Knobs: GPU_CHECK_BUDGET (s), GPU_CHECK_IMAGES (1024), GPU_CHECK_VENV (/tmp/tagger-gpu-venv),
# GPU_CHECK_WHEELS (.whl), PYTHON (python3). Exit status: 0 when every step ran and passed.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ -n "${OUT:-}" ]]; then # everything also to $OUT/gpu_check.log
    mkdir -p "$OUT"
    exec > >(tee -a "$OUT/gpu_check.log") 2>&1
    tee_pid=$!
    trap 'exec >&- 2>&-; wait "$tee_pid"' EXIT # let tee write the last lines
fi

BUDGET=${GPU_CHECK_BUDGET:-285}
IMAGES=${GPU_CHECK_IMAGES:-1024}
VENV=${GPU_CHECK_VENV:-/tmp/tagger-gpu-venv}
WHEELS=${GPU_CHECK_WHEELS:-.whl}
PYTHON=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=1 PIP_DISABLE_PIP_VERSION_CHECK=1
failed=0
summary=()

# step TITLE SECONDS CMD...: run CMD under `timeout`, capped at what is left of BUDGET.
# Records the outcome for the summary; returns CMD's status (callers use `if step ...`).
step() {
    local title=$1 limit=$2 left=$((BUDGET - SECONDS)) rc=0
    shift 2
    if ((left < limit)); then limit=$left; fi
    if ((limit < 5)); then
        skip "$title" "time budget (${BUDGET}s) spent"
        return 1
    fi
    echo
    echo "=== $title (timeout ${limit}s, at ${SECONDS}s)"
    timeout -k 5 "$limit" "$@" || rc=$?
    case $rc in
        0) summary+=("ok         $title") ;;
        124 | 137) summary+=("TIMED OUT  $title (${limit}s)"); failed=1 ;;
        *) summary+=("FAILED     $title (exit $rc)"); failed=1 ;;
    esac
    return "$rc"
}

skip() { # skip TITLE REASON
    echo
    echo "=== $1: SKIPPED: $2"
    summary+=("SKIPPED    $1: $2")
    failed=1
}

# --- 1. the GPU ---------------------------------------------------------------------
query=index,name,driver_version,memory.total,memory.used,utilization.gpu,temperature.gpu
query+=,power.draw,power.limit,clocks.sm,clocks.max.sm
step "nvidia-smi" 20 bash -c "nvidia-smi && nvidia-smi --format=csv --query-gpu=$query" || true

# --- 2. a venv with tagger ----------------------------------------------------------
# The venv also sees the host Python's packages, after its own (a .pth file that adds
# the host's site-packages; --system-site-packages would not, where the host python3 is
# itself a venv, as on the H200 machine): nothing the machine has is downloaded again,
# and pip comes from there. What pip installs lands in the venv and comes first.
make_venv() {
    rm -rf "$VENV"
    "$PYTHON" -m venv --without-pip "$VENV"
    local site
    site=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
    "$PYTHON" -c '
import sys
for p in sys.path:
    if p.endswith(("site-packages", "dist-packages")):
        print(f"import site; site.addsitedir({p!r})")' >"$site/_host_packages.pth"
    "$VENV/bin/python" -m pip --version
}
export -f make_venv
export VENV PYTHON
step "venv at $VENV" 30 bash -c make_venv || {
    echo "!! no venv: using $PYTHON with the repo on PYTHONPATH"
    VENV=""
}
PY=${VENV:+$VENV/bin/python}
PY=${PY:-$PYTHON}

echo
echo "=== package registry reachable? (pip index versions pip)"
online=0
if [[ -n $VENV ]] && timeout 20 "$PY" -m pip index versions pip --timeout 5 --retries 0; then
    online=1
fi
services=0 # Postgres and Redis where the tests expect them
if timeout 2 bash -c '</dev/tcp/127.0.0.1/5432 && </dev/tcp/127.0.0.1/6379' 2>/dev/null; then
    services=1
fi

if ((online)); then
    # GPU TensorFlow from pip (tensorflow[and-cuda], as the Dockerfile's GPU variant);
    # moto only for the end-to-end part (benchmarks import tests.services).
    extras=('tensorflow[and-cuda]>=2.16')
    if ((services)); then extras+=('moto[server]>=5.0'); fi
    step "pip install -e . ${extras[*]}" 170 "$PY" -m pip install -q -e . "${extras[@]}" || true
elif [[ -n $VENV ]]; then
    echo
    echo "!! no package registry reachable: dependencies are only what this machine has"
    if compgen -G "$WHEELS/*.whl" >/dev/null; then
        step "install carried wheels from $WHEELS" 60 \
            "$PY" -m pip install -q --no-index --no-deps "$WHEELS"/*.whl || true
    fi
    was_failed=$failed
    if ! step "pip install -e . (offline: --no-deps --no-build-isolation)" 60 \
        "$PY" -m pip install -q --no-deps --no-build-isolation -e .; then
        # Not fatal: the repo goes on PYTHONPATH below, which is all the benchmarks need.
        summary[-1]="note       tagger not pip-installed offline; imported from the repo instead"
        failed=$was_failed
    fi
fi
# Whatever happened above, the repo's own modules import (benchmarks also use tests/, train/).
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

# --- 3. what imports ----------------------------------------------------------------
DEPS_PY='
import importlib, sys
print(sys.executable, sys.version.split()[0])
missing = []
for name in ("tensorflow", "keras", "numpy", "PIL", "pydantic_settings", "sqlalchemy",
             "psycopg2", "alembic", "celery", "redis", "boto3", "click", "rich",
             "openvino", "prometheus_client", "moto", "tagger.settings", "torch", "jax"):
    try:
        version = getattr(importlib.import_module(name), "__version__", "")
        print(f"  ok       {name} {version}")
    except Exception as exc:
        missing.append(name)
        print(f"  MISSING  {name}: {type(exc).__name__}: {str(exc)[:100]}")
open(sys.argv[1], "w").write(" ".join(missing))
'
missing_file=$(mktemp)
step "which packages import" 60 "$PY" -c "$DEPS_PY" "$missing_file" || true
missing=" $(cat "$missing_file") "

# --- 4. TensorFlow and the GPU -----------------------------------------------------
TF_PY='
import time
import tensorflow as tf
gpus = tf.config.list_physical_devices("GPU")
print("tensorflow", tf.__version__, "| built with CUDA:", tf.test.is_built_with_cuda())
print("GPUs TensorFlow sees:", gpus)
if not gpus:
    raise SystemExit("TensorFlow sees no GPU (CPU-only wheel, or CUDA libraries missing)")
for gpu in gpus:
    tf.config.experimental.set_memory_growth(gpu, True)
print("device:", tf.config.experimental.get_device_details(gpus[0]))
n, reps = 8192, 10  # float32 runs as TF32 on tensor cores (TensorFlow default)
for dtype in (tf.float32, tf.float16):
    with tf.device("/GPU:0"):
        a = tf.random.normal((n, n), dtype=dtype)
        float(tf.reduce_sum(tf.matmul(a, a)))  # warm-up
        start = time.perf_counter()
        for _ in range(reps):
            b = tf.matmul(a, a)
        float(tf.reduce_sum(b))  # waits for the GPU
        seconds = time.perf_counter() - start
    print(f"matmul {n}x{n} {dtype.name}: {2 * n**3 * reps / seconds / 1e12:.1f} TFLOP/s")
'
tf_ok=0
if [[ $missing == *" tensorflow "* ]]; then
    skip "TensorFlow sees the GPU" "TensorFlow is not installed and no registry could provide it"
elif step "TensorFlow sees the GPU" 60 "$PY" -c "$TF_PY"; then
    tf_ok=1
fi

# --- 5. the model benchmark, float32 then mixed precision ------------------------------
needed=""
for name in tensorflow keras numpy PIL pydantic_settings; do
    if [[ $missing == *" $name "* ]]; then needed+=" $name"; fi
done
args=(--runtimes keras --images "$IMAGES" --image-size 224 --batch-size 64)
if ((services)) && [[ $missing != *" moto "* ]]; then
    echo
    echo "Postgres and Redis answer on 127.0.0.1: end to end as well as the model alone"
else
    echo
    echo "!! Postgres (127.0.0.1:5432) or Redis (127.0.0.1:6379) absent, or moto missing:"
    echo "!! end-to-end figures skipped, model-only figures only (--model-only)"
    args+=(--model-only)
fi
for precision in false true; do
    title="benchmarks/pipeline.py keras, TAGGER_MIXED_PRECISION=$precision"
    if [[ ! -f benchmarks/pipeline.py ]]; then
        skip "$title" "benchmarks/pipeline.py is not in this tree"
    elif [[ -n $needed ]]; then
        skip "$title" "missing:$needed"
    elif ((!tf_ok)); then
        skip "$title" "needs TensorFlow on the GPU (step above)"
    else
        step "$title" 100 env TAGGER_RUNTIME=keras TAGGER_MIXED_PRECISION=$precision \
            "$PY" benchmarks/pipeline.py "${args[@]}" || true
    fi
done

# --- summary ----------------------------------------------------------------------------
echo
echo "=== summary (${SECONDS}s of ${BUDGET}s)"
printf '  %s\n' "${summary[@]}"
rm -f "$missing_file"
exit "$failed"
