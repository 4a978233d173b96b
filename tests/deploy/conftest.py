"""Fixtures of the deploy/ tests: the deploy folder, parsed YAML, and promtool (skips when it is missing).

promtool comes with Prometheus (Debian: `apt-get install prometheus`; `.ci/run` installs it when it can).
Helpers are handed out as fixtures, so the tests work in any import mode.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def root() -> Path:
    """The repository root."""
    return ROOT


@pytest.fixture(scope="session")
def deploy_dir() -> Path:
    return ROOT / "deploy"


@pytest.fixture(scope="session")
def load_yaml() -> Callable[[Path], Any]:
    """Parse one YAML document (safe loader); a file with several documents is an error here."""

    def load(path: Path) -> Any:
        with path.open(encoding="utf-8") as f:
            return yaml.safe_load(f)

    return load


@pytest.fixture(scope="session")
def promtool() -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run `promtool ARGS...` (in `cwd`); the test is skipped when promtool is not on PATH.

    A non-zero exit fails the test with promtool's output.
    """
    exe = shutil.which("promtool")
    if exe is None:
        pytest.skip("promtool is not installed (Debian: apt-get install prometheus)")

    def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([exe, *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False)
        assert result.returncode == 0, f"promtool {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
        return result

    return run
