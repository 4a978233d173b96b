"""The installed distribution puts one package on sys.path, `vae_anomaly`: the repository's
`model/`, `service/` and `training/` are its subpackages, so a user's own `model` package never
clashes with ours. Checked on the installed (editable) distribution and on the built wheel, each
from a directory outside the checkout so the checkout itself is not on sys.path."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

PROBE = """
import importlib.util, json, sys
import vae_anomaly.model.artifact, vae_anomaly.service.app, vae_anomaly.training.cli
from vae_anomaly import Detector
print(json.dumps({
    "top_level": {name: importlib.util.find_spec(name) is not None for name in ("model", "service", "training")},
    "file": vae_anomaly.model.artifact.__file__,
    "detector": Detector.__module__,
}))
"""

SERVICE_ONLY = """
import sys
import vae_anomaly.service.app
training = [m for m in sys.modules if m.startswith("vae_anomaly.training") or m in ("pandas", "sklearn", "matplotlib")]
print(sorted(training))
"""


def _python(code: str, cwd: Path, **env: str) -> str:
    clean = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, env={**clean, **env}, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1]


def test_installed_distribution_exposes_only_vae_anomaly(tmp_path: Path):
    import json

    seen = json.loads(_python(PROBE, tmp_path))
    assert seen["top_level"] == {"model": False, "service": False, "training": False}
    assert Path(seen["file"]).resolve() == (ROOT / "model" / "artifact.py").resolve()
    assert seen["detector"] == "vae_anomaly.training.api"


def test_the_service_imports_without_the_training_stack(tmp_path: Path):
    """`import vae_anomaly.service...` runs vae_anomaly/__init__.py first; it must not pull in
    training (the container's serve install has no pandas, scikit-learn or matplotlib)."""
    assert _python(SERVICE_ONLY, tmp_path) == "[]"


@pytest.mark.slow
def test_built_wheel_holds_only_vae_anomaly(tmp_path: Path):
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    for name in ("model", "service", "training", "vae_anomaly"):
        shutil.copytree(ROOT / name, source / name, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
         "-w", str(wheels), str(source)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    (wheel,) = wheels.glob("vae_anomaly-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        archive.extractall(tmp_path / "unpacked")
    assert {name.split("/")[0] for name in names} == {"vae_anomaly", wheel.name.split("-")[0] + "-0.1.0.dist-info"}
    assert "vae_anomaly/model/artifact.py" in names and "vae_anomaly/training/cli.py" in names
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "vae-anomaly = vae_anomaly.training.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()

    import json

    seen = json.loads(_python(PROBE, tmp_path, PYTHONPATH=str(tmp_path / "unpacked")))
    assert seen["top_level"] == {"model": False, "service": False, "training": False}
    assert Path(seen["file"]).is_relative_to(tmp_path / "unpacked")
