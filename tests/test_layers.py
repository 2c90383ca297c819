"""The worker's import path stays free of the trainer and of terminal output libraries.

``tagger`` never imports ``train`` (a worker image installs without the trainer's
extras), and the worker process prints nothing itself, so neither ``rich`` nor
``matplotlib`` belongs there. TensorFlow is checked too: it must first be imported in a
worker's child process, after the fork (see tagger.pipeline).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

FORBIDDEN = ("train", "matplotlib", "rich", "tensorflow", "keras")

WORKER_IMPORTS = """
import tagger.celery_app, tagger.tasks, tagger.pipeline, tagger.model, tagger.artifacts
import tagger.artifact_cache, tagger.storage, tagger.db, tagger.registry
import tagger.runtime, tagger.openvino_model, tagger.tokenizer
from tagger.celery_app import create_app
from tagger.settings import Settings

create_app(Settings(database_url="sqlite://", broker_url="redis://127.0.0.1:6379/0"))
"""


def _forbidden_modules_loaded(code: str) -> dict[str, list[str]]:
    """{top-level package: its modules} for each FORBIDDEN package that ``code`` loads.

    Runs in a fresh interpreter: this test process has long since imported everything.
    """
    script = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))\n"
    out = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    loaded = json.loads(out.stdout.splitlines()[-1])
    found = {top: sorted(m for m in loaded if m.split(".")[0] == top) for top in FORBIDDEN}
    return {top: mods for top, mods in found.items() if mods}


def test_worker_import_path_loads_no_trainer_plotting_rich_or_tensorflow():
    """Importing the worker's modules and building its Celery app loads none of FORBIDDEN."""
    assert _forbidden_modules_loaded(WORKER_IMPORTS) == {}


# The sweep task imports tagger.enqueue only when it runs, so it is checked on its own.
def test_sweep_task_imports_load_no_trainer_plotting_rich_or_tensorflow():
    """What the sweep task imports at run time (tagger.enqueue) loads none of FORBIDDEN."""
    assert _forbidden_modules_loaded(f"{WORKER_IMPORTS}\nimport tagger.enqueue\n") == {}
