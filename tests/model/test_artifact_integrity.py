"""An artifact attacked as an adversary (or a careless hand) would: numbers that are not numbers, a
manifest edited after saving, a network sized to exhaust memory, files that are not files
(issue 14, items 16, 21 and 22). Each is refused at load with a message naming the file and the fault."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import vae_anomaly.model.artifact as artifact
import vae_anomaly.model.detector as detector_module
from vae_anomaly.model.artifact import MANIFEST, WEIGHTS, ArtifactError, manifest_digest, read_manifest, write_manifest
from vae_anomaly.model.detector import Detector


@pytest.fixture
def saved(mixed_detector: Detector, tmp_path: Path) -> Path:
    directory = tmp_path / "model"
    Detector(mixed_detector.manifest, mixed_detector.kind, mixed_detector.network, torch.device("cpu")).save(directory)
    return directory


def _raw(directory: Path) -> dict:
    return json.loads((directory / MANIFEST).read_text())


def _load_error(directory: Path) -> str:
    with pytest.raises(ArtifactError) as info:
        Detector.load(directory, device="cpu")
    return str(info.value)


# -- item 16: strict numbers, a real active threshold, calibration scores --------------------------


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_nan_or_infinity_literal_is_refused(saved: Path, literal: str):
    """Python's json accepts these; `score > NaN` is never true, so a NaN threshold flags nothing."""
    raw = _raw(saved)
    raw["thresholds"]["warn"]["value"] = "PLACEHOLDER"
    (saved / MANIFEST).write_text(json.dumps(raw).replace('"PLACEHOLDER"', literal))
    message = _load_error(saved)
    assert message.startswith(f"{saved / MANIFEST}: not valid JSON")
    assert f"{literal} is not a JSON number" in message


def test_overflowing_number_is_refused_as_not_finite(saved: Path):
    raw = _raw(saved)
    raw["calibration_scores"][3] = "PLACEHOLDER"
    (saved / MANIFEST).write_text(json.dumps(raw).replace('"PLACEHOLDER"', "1e999"))  # parses as inf
    message = _load_error(saved)
    assert "calibration_scores.3 is inf: every number must be finite" in message


def test_non_finite_number_is_refused_without_a_checksum_too(saved: Path):
    """An artifact from before manifest_sha256 (no checksum) still gets every number checked."""
    raw = _raw(saved)
    del raw["manifest_sha256"]
    raw["kind_config"]["preprocessing"]["numeric"]["a"]["scale"] = "PLACEHOLDER"
    (saved / MANIFEST).write_text(json.dumps(raw).replace('"PLACEHOLDER"', "1e999"))
    message = _load_error(saved)
    assert message.startswith(f"{saved / MANIFEST}: invalid manifest")
    assert "kind_config.preprocessing.numeric.a.scale is inf" in message


def test_unknown_active_threshold_is_refused(saved: Path):
    raw = _raw(saved)
    raw["active_threshold"] = "page"
    write_manifest(saved, raw)
    message = _load_error(saved)
    assert "active_threshold 'page' is not one of the thresholds (warn, critical)" in message


def test_empty_calibration_scores_are_refused(saved: Path):
    raw = _raw(saved)
    raw["calibration_scores"] = []
    write_manifest(saved, raw)
    message = _load_error(saved)
    assert message.startswith(f"{saved / MANIFEST}: invalid manifest") and "calibration_scores" in message


def test_negative_hidden_width_is_refused(saved: Path):
    raw = _raw(saved)
    raw["kind_config"]["network"]["hidden_dims"] = [16, -8]
    write_manifest(saved, raw)
    message = _load_error(saved)
    assert message.startswith(f"{saved / MANIFEST}: invalid manifest") and "hidden_dims.1" in message


def test_a_nan_cannot_be_saved(saved: Path):
    detector = Detector.load(saved, "cpu")
    detector.thresholds = detector.thresholds.with_value("warn", float("nan"))
    with pytest.raises(ValueError, match=r"thresholds\.warn\.value is nan"):
        detector.save(saved.parent / "again")


# -- item 22: the manifest is checksummed; shapes come from the header first ----------------------


def test_saved_manifest_carries_its_own_checksum(saved: Path):
    raw = _raw(saved)
    assert raw["manifest_sha256"] == manifest_digest(raw)
    assert read_manifest(saved).manifest_sha256 == raw["manifest_sha256"]


def test_edited_manifest_is_refused(saved: Path):
    """The issue's case: a warn threshold multiplied by 10 loaded silently."""
    raw = _raw(saved)
    raw["thresholds"]["warn"]["value"] *= 10
    (saved / MANIFEST).write_text(json.dumps(raw))
    message = _load_error(saved)
    assert message.startswith(f"{saved / MANIFEST}: sha256 ")
    assert f"does not match its manifest_sha256 {raw['manifest_sha256'][:12]}" in message


def test_manifest_without_a_checksum_still_loads_with_the_same_scores(saved: Path, mixed_records):
    """Artifacts saved before manifest_sha256 existed (format_version 2 all the same) keep loading."""
    before = Detector.load(saved, "cpu")
    raw = _raw(saved)
    del raw["manifest_sha256"]
    (saved / MANIFEST).write_text(json.dumps(raw, indent=1))
    after = Detector.load(saved, "cpu")
    assert after.manifest.manifest_sha256 is None
    columns = before.kind.columns_from_records(mixed_records[:50])
    np.testing.assert_array_equal(after.terms(columns).score, before.terms(columns).score)


def test_huge_network_is_refused_from_the_header_before_allocating(saved: Path, monkeypatch):
    """hidden_dims [12000, 12000] took 1.34 GB before the shapes were compared: now the shapes in the
    safetensors header are compared with a network built on the meta device, and no tensor is read."""
    raw = _raw(saved)
    raw["kind_config"]["network"]["hidden_dims"] = [12000, 12000]
    write_manifest(saved, raw)

    def no_tensors(directory: Path) -> dict:
        raise AssertionError("weights were loaded before the shapes were compared")

    monkeypatch.setattr(detector_module, "load_weights", no_tensors)
    started = time.perf_counter()
    message = _load_error(saved)
    assert time.perf_counter() - started < 5
    assert message.startswith(f"{saved / WEIGHTS}: weights do not fit the manifest's network")
    assert "[16, " in message and "[12000, " in message


def test_nan_weights_are_refused(saved: Path):
    _, tensors = artifact.load_artifact(saved)
    name = next(iter(tensors))
    tensors[name] = tensors[name].clone()
    tensors[name].view(-1)[0] = float("nan")
    save_file(tensors, str(saved / WEIGHTS))
    sha = artifact._sha256(saved / WEIGHTS)
    raw = _raw(saved)
    raw.update(weights_sha256=sha, model_id=sha[:12])
    write_manifest(saved, raw)
    message = _load_error(saved)
    assert message == f"{saved / WEIGHTS}: tensor {name!r} holds NaN or infinite values; the weights are unusable"


# -- item 21: regular files only, bounded in size --------------------------------------------------


def test_fifo_manifest_is_refused_without_blocking(saved: Path):
    (saved / MANIFEST).unlink()
    os.mkfifo(saved / MANIFEST)
    started = time.perf_counter()
    message = _load_error(saved)  # a plain open() would wait for a writer forever
    assert time.perf_counter() - started < 5
    assert message.startswith(f"{saved / MANIFEST}: not a regular file")


def test_manifest_linked_to_dev_zero_is_refused(saved: Path):
    (saved / MANIFEST).unlink()
    (saved / MANIFEST).symlink_to("/dev/zero")
    assert _load_error(saved).startswith(f"{saved / MANIFEST}: not a regular file")


def test_manifest_that_is_a_directory_is_refused(saved: Path):
    (saved / MANIFEST).unlink()
    (saved / MANIFEST).mkdir()
    assert _load_error(saved).startswith(f"{saved / MANIFEST}: not a regular file")


def test_weights_linked_to_dev_zero_are_refused(saved: Path):
    (saved / WEIGHTS).unlink()
    (saved / WEIGHTS).symlink_to("/dev/zero")
    assert _load_error(saved) == f"{saved / WEIGHTS}: not a regular file (a directory, FIFO or device)"


def test_oversized_manifest_is_refused_before_reading(saved: Path, monkeypatch):
    size = (saved / MANIFEST).stat().st_size
    monkeypatch.setattr(artifact, "MAX_MANIFEST_BYTES", size - 1)
    message = _load_error(saved)
    assert message == f"{saved / MANIFEST}: {size} bytes exceed the limit of {size - 1} bytes"


def test_too_long_path_is_an_artifact_error(tmp_path: Path):
    path = tmp_path / ("x" * 5000)
    assert _load_error(path).startswith(f"{path}: not a usable model directory")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_unreadable_manifest_names_the_permission(saved: Path):
    (saved / MANIFEST).chmod(0)
    try:
        assert _load_error(saved).startswith(f"{saved / MANIFEST}: permission denied")
    finally:
        (saved / MANIFEST).chmod(0o644)


def test_permission_error_becomes_an_artifact_error(saved: Path, monkeypatch):
    """Whoever runs the tests (root reads anything), a PermissionError is named, never raised raw."""
    real_open = os.open

    def denied(path, *args, **kwargs):
        if Path(path) == saved / MANIFEST:
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(artifact.os, "open", denied)
    message = _load_error(saved)
    assert message == f"{saved / MANIFEST}: permission denied; the server's user must be able to read it"
