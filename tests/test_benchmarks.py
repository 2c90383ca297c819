"""The benchmark scripts that run elsewhere (on a lent GPU machine), checked here without
running them."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from tests.dockerfile import ROOT

GPU_CHECK = ROOT / "benchmarks" / "gpu_check.sh"


def test_gpu_check_script_is_executable_bash_with_valid_syntax():
    """benchmarks/gpu_check.sh is executable and `bash -n` (parse only) accepts it."""
    bash = shutil.which("bash")
    if bash is None:
        pytest.skip("no bash on PATH")
    assert os.access(GPU_CHECK, os.X_OK), f"{GPU_CHECK} is not executable (chmod +x)"
    assert GPU_CHECK.read_text().startswith("#!/usr/bin/env bash\n")
    result = subprocess.run([bash, "-n", str(GPU_CHECK)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
