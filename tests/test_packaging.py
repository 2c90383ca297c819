"""A plain, non-editable install of the built wheel runs the migrations on its own."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests import services

ROOT = Path(__file__).resolve().parent.parent

# Prints where tagger came from, then runs the CLI's `db upgrade` in the same process.
UPGRADE = """
import sys
import tagger, tagger.cli
print(tagger.__file__, flush=True)
sys.argv = ["tagger", "db", "upgrade"]
tagger.cli.main()
"""


def _run(args: list[str], **kwargs) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=300, check=True, **kwargs)


def test_wheel_installed_with_target_runs_db_upgrade(tmp_path):
    """A wheel installed with pip --target, no checkout beside it, migrates a database to head."""
    # --no-build-isolation (no index needed) builds with the venv's own setuptools, which
    # Python 3.12+ venvs no longer include.
    pytest.importorskip("setuptools", reason="building the wheel needs setuptools in the venv")
    from alembic.script import ScriptDirectory

    from tagger.db import alembic_config

    # Build from a copy: an in-tree build would leave build/ and *.egg-info in the checkout.
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    for package in ("tagger", "train"):
        shutil.copytree(ROOT / package, src / package, ignore=shutil.ignore_patterns("__pycache__"))
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    _run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path), str(src)])
    (wheel,) = tmp_path.glob("tagger-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    versions = {
        f"tagger/migrations/versions/{p.name}" for p in src.glob("tagger/migrations/versions/*.py")
    }
    assert {"tagger/migrations/env.py", "tagger/migrations/script.py.mako"} | versions <= names
    target = tmp_path / "plain"
    _run([*pip, "install", "--quiet", "--no-deps", "--target", str(target), str(wheel)])

    with services.postgres_database() as url:
        # cwd outside the checkout and PYTHONPATH first on sys.path: the installed copy is
        # the one imported, ahead of the venv's editable install of the checkout.
        env = {**os.environ, "PYTHONPATH": str(target), "TAGGER_DATABASE_URL": url}
        out = _run([sys.executable, "-c", UPGRADE], cwd=tmp_path, env=env)
        assert Path(out.stdout.splitlines()[0]).parent == target / "tagger"
        engine = sa.create_engine(url)
        try:
            with engine.connect() as conn:
                revisions = conn.execute(sa.text("SELECT version_num FROM alembic_version")).all()
        finally:
            engine.dispose()
        head = ScriptDirectory.from_config(alembic_config(url)).get_current_head()
        assert revisions == [(head,)]
