# The tagger image: one image for the worker, beat, migrations and every CLI command.
#
#   docker build -t tagger .                                   # CPU (default)
#   docker build -t tagger-gpu --build-arg TENSORFLOW_VARIANT=gpu .   # GPU: tensorflow[and-cuda]
#
#   docker run --rm tagger --help
#   docker run --rm -e TAGGER_DATABASE_URL=... tagger db upgrade
#
# The GPU variant needs only the NVIDIA driver and the NVIDIA Container Toolkit on the
# host: the CUDA and cuDNN libraries come from pip (`tensorflow[and-cuda]`), so the base
# stays python:3.11-slim rather than a CUDA base image.
FROM python:3.11-slim

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

# 2) The project itself. Installed in editable mode from /app on purpose: tagger/db.py finds
#    the Alembic environment at <package dir>/../migrations, so /app/migrations must sit
#    beside /app/tagger (a regular `pip install .` would put the package in site-packages,
#    away from migrations/). --no-deps: everything was installed in the layer above.
COPY . .
RUN pip install --no-deps -e . \
    && python -c "from tagger.db import MIGRATIONS_DIR; assert (MIGRATIONS_DIR / 'env.py').is_file(), MIGRATIONS_DIR" \
    && tagger --help > /dev/null

USER tagger
ENV HOME=/home/tagger

ENTRYPOINT ["tagger"]
CMD ["worker"]
