"""`POST /admin/reload` with artifacts an adversary would try (issue 14, items 20 and 21): every one
is a 422 naming the problem, counted in `reloads_total{result="failure"}`, and the old model serves on."""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from safetensors.torch import load_file, save_file

from tests.conftest import API_TOKEN
from tests.service.test_admin_and_metrics import samples, value
from vae_anomaly.model.artifact import MANIFEST, WEIGHTS, write_manifest

AUTH = {"Authorization": f"Bearer {API_TOKEN}"}


def _edit(directory: Path, change: Callable[[dict], None]) -> None:
    raw = json.loads((directory / MANIFEST).read_text())
    change(raw)
    write_manifest(directory, raw)


def _nan_weights(directory: Path) -> None:
    import hashlib

    tensors = load_file(str(directory / WEIGHTS))
    name = sorted(tensors)[0]
    tensors[name] = tensors[name].clone()
    tensors[name].view(-1)[0] = float("nan")
    save_file(tensors, str(directory / WEIGHTS))
    sha = hashlib.sha256((directory / WEIGHTS).read_bytes()).hexdigest()
    _edit(directory, lambda raw: raw.update(weights_sha256=sha, model_id=sha[:12]))


def _replace_manifest(directory: Path, make: Callable[[Path], None]) -> None:
    (directory / MANIFEST).unlink()
    make(directory / MANIFEST)


def _set_network(raw: dict, hidden_dims: list[int]) -> None:
    raw["kind_config"]["network"]["hidden_dims"] = hidden_dims


DAMAGES: dict[str, tuple[Callable[[Path], None], str]] = {
    "manifest-is-a-directory": (lambda d: _replace_manifest(d, Path.mkdir), "manifest.json: not a regular file"),
    "manifest-is-a-fifo": (lambda d: _replace_manifest(d, os.mkfifo), "manifest.json: not a regular file"),
    "manifest-is-dev-zero": (
        lambda d: _replace_manifest(d, lambda p: p.symlink_to("/dev/zero")),
        "manifest.json: not a regular file",
    ),
    "unknown-active-threshold": (
        lambda d: _edit(d, lambda raw: raw.update(active_threshold="page")),
        "active_threshold 'page' is not one of the thresholds",
    ),
    "negative-hidden-width": (
        lambda d: _edit(d, lambda raw: _set_network(raw, [32, -16])),
        "hidden_dims.1",
    ),
    "huge-hidden-width": (
        lambda d: _edit(d, lambda raw: _set_network(raw, [12000, 12000])),
        "weights do not fit the manifest's network",
    ),
    "empty-calibration": (
        lambda d: _edit(d, lambda raw: raw.update(calibration_scores=[])),
        "calibration_scores",
    ),
    "nan-weights": (_nan_weights, "holds NaN or infinite values"),
    "nan-threshold": (
        lambda d: (d / MANIFEST).write_text((d / MANIFEST).read_text().replace('"value": ', '"value": NaN, "x": ', 1)),
        "NaN is not a JSON number",
    ),
    "edited-threshold": (
        lambda d: (d / MANIFEST).write_text((d / MANIFEST).read_text().replace('"value": ', '"value": 1', 1)),
        "does not match its manifest_sha256",
    ),
}


@pytest.fixture
def second_model(tiny_model_dir: Path, tmp_path: Path) -> Path:
    target = tmp_path / "second"
    shutil.copytree(tiny_model_dir, target)
    return target


@pytest.mark.parametrize("case", list(DAMAGES))
def test_a_bad_artifact_is_a_counted_422(client, second_model, normal_record, case: str):
    damage, message = DAMAGES[case]
    damage(second_model)
    started = time.perf_counter()
    response = client.post("/admin/reload", json={"model_dir": str(second_model)}, headers=AUTH)
    assert time.perf_counter() - started < 10  # a FIFO no longer blocks the reload (and every later one)
    assert response.status_code == 422, response.text
    (item,) = response.json()["detail"]
    assert item["type"] == "artifact_invalid" and item["loc"] == ["body", "model_dir"]
    assert message in item["msg"] and "still serving model" in item["msg"]
    metrics = samples(client)
    assert value(metrics, "vae_anomaly_reloads_total", result="failure") == 1
    assert value(metrics, "vae_anomaly_reloads_total", result="success") == 0
    assert client.post("/score", json={"records": [normal_record]}).status_code == 200
    # Nothing is left stuck: the next reload, of a good artifact, goes through.
    good = client.post("/admin/reload", headers=AUTH)
    assert good.status_code == 200, good.text


@pytest.mark.parametrize(
    ("model_dir", "message"),
    [
        ("/" + "/".join(["x" * 300] * 3), "not a usable model directory"),  # a name longer than NAME_MAX
        ("/etc/hostname/inside-a-file", "model directory not found"),
    ],
    ids=["too-long", "through-a-file"],
)
def test_an_unusable_path_is_a_counted_422(client, model_dir: str, message: str):
    response = client.post("/admin/reload", json={"model_dir": model_dir}, headers=AUTH)
    assert response.status_code == 422, response.text
    assert message in response.json()["detail"][0]["msg"]
    assert value(samples(client), "vae_anomaly_reloads_total", result="failure") == 1
