# The tagger images. Two targets:
#   worker  (the default: last stage) the service alone: worker, beat, migrations and every
#           `tagger` command. Only pyproject's [project].dependencies, no trainer extras.
#   trainer the worker image plus the `train` extra, for `python -m train`.
#
#   docker build -t tagger .                                          # worker, CPU (default)
#   docker build -t tagger-gpu --build-arg TENSORFLOW_VARIANT=gpu .   # worker, GPU: tensorflow[and-cuda]
#   docker build -t tagger-trainer --target trainer .                 # trainer (same arg for GPU)
#
#   docker run --rm tagger --help
#   docker run --rm -e TAGGER_DATABASE_URL=... tagger db upgrade
#   docker run --rm --entrypoint python tagger-trainer -m train --help
#
# What the trainer adds, measured without a Docker engine as two fresh Python 3.11 CPU
# venvs with the wheel installed without and with the extra (`du -sm` of site-packages):
# 2273 MB vs 2348 MB, +75 MB (matplotlib, contourpy, cycler, fonttools, kiwisolver,
# pyparsing); TensorFlow is most of both.
#
# The GPU variant needs only the NVIDIA driver and the NVIDIA Container Toolkit on the
# host: the CUDA and cuDNN libraries come from pip (`tensorflow[and-cuda]`), so the base
# stays python:3.11-slim rather than a CUDA base image.

# --- the project as a wheel (no TensorFlow needed to build it) -----------------------
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY tagger ./tagger
COPY train ./train
RUN pip wheel --no-deps --wheel-dir /wheels .

# --- the service ---------------------------------------------------------------------
FROM python:3.11-slim AS service

# cpu: plain `tensorflow`; gpu: `tensorflow[and-cuda]` (same version bound as pyproject.toml).
ARG TENSORFLOW_VARIANT=cpu

# TAGGER_MODEL_CACHE_DIR: model artifacts fetched from S3 land here (docker-compose.yml
# mounts a volume on it, so a restarted container does not download them again).
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TAGGER_MODEL_CACHE_DIR=/var/cache/tagger/models

# Non-root user. The directories it writes to (model cache, beat's schedule file) are made
# here and owned by it, so a named volume mounted on them starts with the same ownership.
RUN groupadd --system --gid 10001 tagger \
    && useradd --system --uid 10001 --gid tagger --create-home --home-dir /home/tagger \
        --shell /usr/sbin/nologin tagger \
    && mkdir -p /var/cache/tagger/models /var/lib/tagger \
    && chown -R tagger:tagger /var/cache/tagger /var/lib/tagger

WORKDIR /app

# 1) Dependencies only, read from pyproject.toml: this (large: TensorFlow) layer is rebuilt
#    when the dependency list changes, not on every source edit.
COPY pyproject.toml ./
RUN case "$TENSORFLOW_VARIANT" in \
        cpu|gpu) ;; \
        *) echo "TENSORFLOW_VARIANT must be cpu or gpu, got '$TENSORFLOW_VARIANT'" >&2; exit 1 ;; \
    esac \
    && python -c 'import re, sys, tomllib; \
deps = tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]; \
gpu = sys.argv[1] == "gpu"; \
print("\n".join(re.sub(r"^tensorflow(?=[<>=!~ ;]|$)", "tensorflow[and-cuda]", d) if gpu else d for d in deps))' \
        "$TENSORFLOW_VARIANT" > /tmp/requirements.txt \
    && cat /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

# 2) The project itself, a regular (non-editable) install of the wheel: Alembic's scripts
#    are package data (tagger/migrations), so site-packages holds everything and no source
#    tree stays in the image. --no-deps: everything was installed in the layer above. The
#    build fails if the migrations did not come along.
COPY --from=build /wheels /tmp/wheels
RUN pip install --no-deps /tmp/wheels/*.whl \
    && rm -rf /tmp/wheels \
    && python -c "from tagger.db import MIGRATIONS_DIR; assert (MIGRATIONS_DIR / 'env.py').is_file(), MIGRATIONS_DIR" \
    && tagger --help > /dev/null

USER tagger
ENV HOME=/home/tagger

ENTRYPOINT ["tagger"]
CMD ["worker"]

# --- the trainer: the service plus pyproject's `train` extra -------------------------
FROM service AS trainer
USER root
RUN python -c 'import tomllib; \
print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]["train"]))' \
        > /tmp/requirements-train.txt \
    && cat /tmp/requirements-train.txt \
    && pip install -r /tmp/requirements-train.txt \
    && rm /tmp/requirements-train.txt \
    && python -c "import matplotlib, train.plots" \
    && python -m train --help > /dev/null
USER tagger

# --- the worker (last, so a plain `docker build` and docker compose build this one) --
FROM service AS worker
