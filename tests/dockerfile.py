"""Reading the Dockerfile and .dockerignore without a Docker engine, and checking a
container's `tagger` command against the CLI (for test_dockerfile and test_compose)."""

from __future__ import annotations

import fnmatch
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"


def instructions() -> list[tuple[str, str]]:
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


def stages() -> dict[str, list[tuple[str, str]]]:
    """{stage name: its instructions after FROM}, in file order."""
    found: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] = []
    for op, args in instructions():
        if op == "FROM":
            words = args.split()
            assert len(words) == 3 and words[1].upper() == "AS", f"unnamed stage: FROM {args}"
            current = found.setdefault(words[2], [])
        else:
            current.append((op, args))
    return found


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


def cli_command(args: list[str]) -> str:
    """The `tagger` command ARGS run, checked against the CLI: every word names a command
    and the options parse (nothing runs; `worker` and `beat` pass options they do not know
    on to Celery unchecked). Returns the command's path, e.g. "db upgrade"."""
    import click

    from tagger.cli import cli

    command: click.Command = cli
    path: list[str] = []
    while isinstance(command, click.Group) and args and not args[0].startswith("-"):
        sub = command.get_command(click.Context(command), args[0])
        assert sub is not None, f"`tagger {' '.join(path + args)}`: no command {args[0]!r}"
        command, path, args = sub, [*path, args[0]], args[1:]
    command.make_context(" ".join(["tagger", *path]), list(args))
    return " ".join(path)
