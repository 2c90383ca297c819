"""docker-compose.yml loaded as Docker Compose reads it (YAML anchors and merges, then
`${VAR}` interpolation), and its services' settings in one shape whichever syntax the file
uses. For test_compose."""

from __future__ import annotations

import re
import shlex
from typing import Any

import yaml

from tests.dockerfile import ROOT

COMPOSE_FILE = ROOT / "docker-compose.yml"

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
