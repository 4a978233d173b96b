"""scripts/install-torch: CPU torch from PyTorch's CPU index, plain pip when that index is
unreachable, a spec with its own index as given; run against a fake `python -m pip` that records
its arguments."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "install-torch"
CPU_INDEX = "https://download.pytorch.org/whl/cpu"

FAKE_PYTHON = """#!/usr/bin/env bash
# a stand-in for `python -m pip install ...`: one line per call; fails when the CPU index is "down"
echo "$*" >> "$FAKE_LOG"
if [ -n "${FAKE_INDEX_DOWN:-}" ] && [[ " $* " == *" --index-url "* ]]; then
  echo "ERROR: Could not find a version that satisfies the requirement torch" >&2
  exit 1
fi
exit 0
"""


def _run(tmp_path: Path, *spec: str, index_down: bool = False) -> tuple[subprocess.CompletedProcess, list[str]]:
    python = tmp_path / "python"
    python.write_text(FAKE_PYTHON)
    python.chmod(0o755)
    log = tmp_path / "calls.log"
    env = {**os.environ, "FAKE_LOG": str(log)}
    env.pop("TORCH_INDEX_URL", None)
    if index_down:
        env["FAKE_INDEX_DOWN"] = "1"
    done = subprocess.run([str(SCRIPT), str(python), *spec], env=env, capture_output=True, text=True, timeout=30)
    calls = log.read_text().splitlines() if log.exists() else []
    return done, calls


def test_a_plain_spec_comes_from_the_cpu_index_with_a_short_timeout(tmp_path: Path) -> None:
    done, calls = _run(tmp_path, "torch==2.13.0")
    assert done.returncode == 0, done.stderr
    assert len(calls) == 1
    words = calls[0].split()
    assert words[:3] == ["-m", "pip", "install"]
    assert words[words.index("--index-url") + 1] == CPU_INDEX
    assert int(words[words.index("--timeout") + 1]) <= 15, "an unreachable index must fail fast"
    assert words[-1] == "torch==2.13.0"


def test_an_unreachable_cpu_index_falls_back_to_plain_pip(tmp_path: Path) -> None:
    done, calls = _run(tmp_path, "torch==2.13.0", index_down=True)
    assert done.returncode == 0, done.stderr
    assert len(calls) == 2
    assert "--index-url" in calls[0].split()
    assert calls[1].split() == ["-m", "pip", "install", "--quiet", "torch==2.13.0"]
    assert "falling back to plain pip" in done.stderr


@pytest.mark.parametrize("flag", ["--index-url", "--extra-index-url", "--find-links"])
def test_a_spec_naming_its_own_index_is_installed_as_given(tmp_path: Path, flag: str) -> None:
    cuda = "https://download.pytorch.org/whl/cu126"
    done, calls = _run(tmp_path, "torch==2.13.0", flag, cuda)
    assert done.returncode == 0, done.stderr
    assert calls == [f"-m pip install --quiet torch==2.13.0 {flag} {cuda}"]


def test_the_makefile_installs_torch_spec_through_the_script(tmp_path: Path) -> None:
    done = subprocess.run(
        ["make", "-n", "-B", "install", f"VENV={tmp_path / 'venv'}", "TORCH_SPEC=torch==9.9"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    assert f"scripts/install-torch {tmp_path / 'venv'}/bin/python torch==9.9" in done.stdout
