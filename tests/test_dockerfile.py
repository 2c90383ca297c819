"""The Dockerfile, checked without a Docker engine or the network: what its targets
install, the files its build context keeps, and what the image runs."""

from __future__ import annotations

import importlib.metadata
import json
import re

from tests import dockerfile
from tests.dockerfile import ROOT


def test_entrypoint_is_the_tagger_script_and_worker_its_default_command():
    """The image runs the `tagger` console script the package installs, and by default
    `tagger worker`, a command the CLI has."""
    scripts = importlib.metadata.entry_points(group="console_scripts")
    assert "tagger" in scripts.names
    instructions = dockerfile.instructions()
    assert [json.loads(a) for op, a in instructions if op == "ENTRYPOINT"][-1] == ["tagger"]
    default = [json.loads(a) for op, a in instructions if op == "CMD"][-1]
    assert dockerfile.cli_command(default) == "worker"


def test_dockerfile_python_satisfies_requires_python():
    """Every python:X.Y base image is a Python the package's requires-python admits."""
    from packaging.specifiers import SpecifierSet

    wanted = SpecifierSet(importlib.metadata.metadata("tagger")["Requires-Python"])
    bases = [a.split()[0] for op, a in dockerfile.instructions() if op == "FROM"]
    versions = [m.group(1) for b in bases if (m := re.fullmatch(r"python:(\d+\.\d+)\S*", b))]
    assert versions, bases
    assert [v for v in versions if v not in wanted] == []


def test_dockerfile_runs_as_non_root_user():
    """The last USER is a named non-root user that the Dockerfile creates."""
    instructions = dockerfile.instructions()
    users = [args.split(":")[0] for op, args in instructions if op == "USER"]
    assert users and users[-1] not in ("root", "0")
    assert any(op == "RUN" and "useradd" in a and users[-1] in a for op, a in instructions)


def test_dockerfile_copies_existing_files_the_context_keeps():
    """Every COPY source exists, and the package, its migrations and pyproject's files are
    not excluded by .dockerignore."""
    for op, args in dockerfile.instructions():
        if op != "COPY" or "--from=" in args:
            continue  # COPY --from copies out of another stage, not the build context
        sources = [a for a in args.split()[:-1] if not a.startswith("--")]
        for source in sources:
            assert (ROOT / source).exists(), f"COPY source {source} does not exist"
            if source != ".":
                assert not dockerfile.dockerignore_excludes(source), f"{source} is dockerignored"
    needed = ["pyproject.toml", "README.md", "tagger/cli/__init__.py", "tagger/migrations/env.py"]
    needed.append("train")
    assert [p for p in needed if dockerfile.dockerignore_excludes(p)] == []
    for heavy in (".venv", ".git", "demo", "tagger.db", "tagger/__pycache__"):
        assert dockerfile.dockerignore_excludes(heavy), f"{heavy} should be dockerignored"


def test_dockerfile_installs_dependencies_before_the_project_as_a_plain_wheel():
    """pyproject's dependencies go in first (cache), then the project's wheel, non-editable."""
    # The migrations are package data now; the build checks tagger.db.MIGRATIONS_DIR came along.
    instructions = dockerfile.stages()["service"]
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
        for op, a in dockerfile.instructions()
    )


def test_dockerfile_default_target_is_the_worker_and_trainer_adds_the_train_extra():
    """The default (last) stage, what a plain `docker build` gives, is the bare `worker`, as
    the README says; `trainer` adds pyproject's `train` extra."""
    stages = dockerfile.stages()
    froms = [a.split() for op, a in dockerfile.instructions() if op == "FROM"]
    assert froms[-1] == ["service", "AS", "worker"]
    assert ["service", "AS", "trainer"] in froms
    assert not any("optional-dependencies" in a for _, a in stages["service"] + stages["worker"])
    assert any(
        op == "RUN" and '["optional-dependencies"]["train"]' in a and "pip install -r" in a
        for op, a in stages["trainer"]
    )
    assert [a for op, a in stages["trainer"] if op == "USER"][-1] == "tagger"
