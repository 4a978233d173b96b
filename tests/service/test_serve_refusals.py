"""`vae-anomaly serve` on an artifact it cannot serve (issue 14, items 10 and 18): whatever the worker
count, one clear line on stderr and a non-zero exit status, before uvicorn starts."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.service.conftest import DEADLINE_SECONDS, ROOT, break_weights, free_port


def run_serve(model_dir: Path, workers: int) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("VAE_ANOMALY_", "PROMETHEUS_"))}
    environment |= {"VAE_ANOMALY_DEVICE": "cpu", "VAE_ANOMALY_TORCH_THREADS": "1"}
    command = [sys.executable, "-m", "vae_anomaly.training.cli", "serve", str(model_dir), "--port", str(free_port())]
    command += ["--workers", str(workers)]
    return subprocess.run(
        command, cwd=ROOT, env=environment, capture_output=True, text=True, timeout=DEADLINE_SECONDS, check=False
    )


@pytest.mark.parametrize("workers", [1, 2])
def test_broken_weights_exit_2_with_one_line(served_model: Path, workers: int):
    """Before: exit 3 with the reason at the end of a traceback (1 worker), exit 0 (2 workers)."""
    break_weights(served_model)
    result = run_serve(served_model, workers)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    weights = served_model / "weights.safetensors"
    assert lines[0].startswith(f"vae-anomaly serve: cannot serve {served_model}: {weights}: sha256")
    assert "does not match the manifest's" in lines[0] and "Traceback" not in result.stderr


def test_missing_directory_exits_2(tmp_path: Path):
    result = run_serve(tmp_path / "nowhere", 1)
    assert result.returncode == 2
    assert result.stderr.strip().endswith("model directory not found; train one with `vae-anomaly train`")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_unreadable_directory_is_one_line_not_a_permission_error(served_model: Path):
    (served_model / "manifest.json").chmod(0)
    try:
        result = run_serve(served_model, 1)
    finally:
        (served_model / "manifest.json").chmod(0o644)
    assert result.returncode == 2 and "permission denied" in result.stderr
    assert "PermissionError" not in result.stderr
