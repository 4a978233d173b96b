"""model.artifact and Detector.save/load: round trip, every kind of corruption named by its file,
and atomic saves."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import vae_anomaly.model.artifact as artifact
from vae_anomaly.model.artifact import MANIFEST, WEIGHTS, ArtifactError, load_artifact, read_manifest, write_manifest
from vae_anomaly.model.detector import Detector, resolve_device


@pytest.fixture(scope="module")
def fixed_columns(mixed_detector: Detector, mixed_records: list[dict]):
    return mixed_detector.kind.columns_from_records(mixed_records[:100])


@pytest.fixture
def saved(mixed_detector: Detector, tmp_path: Path) -> Path:
    """A fresh copy of the session detector saved under tmp_path/model."""
    directory = tmp_path / "model"
    copy = Detector(mixed_detector.manifest, mixed_detector.kind, mixed_detector.network, torch.device("cpu"))
    copy.save(directory)
    return directory


def _edit_manifest(directory: Path, **changes: object) -> None:
    """A deliberate edit, re-sealed (a fresh manifest_sha256) so the content checks are what refuse it."""
    path = directory / MANIFEST
    raw = json.loads(path.read_text())
    raw.update(changes)
    write_manifest(directory, raw)


# -- round trip -----------------------------------------------------------------------------------


def test_save_writes_both_files_and_a_content_id(saved: Path):
    assert sorted(p.name for p in saved.iterdir()) == [MANIFEST, WEIGHTS]
    manifest = read_manifest(saved)
    assert manifest.model_id == manifest.weights_sha256[:12]
    assert len(manifest.weights_sha256) == 64
    assert set(manifest.library_versions) == {"vae_anomaly", "torch", "numpy", "python"}
    raw = json.loads((saved / MANIFEST).read_text())
    assert raw["format_version"] == 2 and "schema" in raw["kind_config"] and "feature_schema" not in raw["kind_config"]


def test_saved_artifact_gets_umask_permissions(saved: Path):
    """Not mkdtemp's 0700: a server running as another user must be able to read the artifact."""
    umask = os.umask(0)
    os.umask(umask)
    assert saved.stat().st_mode & 0o777 == 0o777 & ~umask
    for path in saved.iterdir():
        assert path.stat().st_mode & 0o777 == 0o666 & ~umask, path.name


def test_save_then_load_scores_identically(mixed_detector: Detector, saved: Path, fixed_columns):
    loaded = Detector.load(saved, device="cpu")
    before = mixed_detector.score(fixed_columns)
    after = loaded.score(fixed_columns)
    np.testing.assert_allclose(after.terms.score, before.terms.score, rtol=1e-6)
    np.testing.assert_allclose(after.terms.contributions, before.terms.contributions, rtol=1e-6, atol=1e-9)
    np.testing.assert_array_equal(after.p_value, before.p_value)
    np.testing.assert_array_equal(after.exceeded, before.exceeded)
    assert loaded.kind.schema == mixed_detector.kind.schema
    assert loaded.manifest.kind_config == mixed_detector.manifest.kind_config  # preprocessing, network
    assert loaded.manifest.family_config == mixed_detector.manifest.family_config
    assert loaded.manifest.scoring == mixed_detector.manifest.scoring
    assert loaded.thresholds.thresholds == mixed_detector.thresholds.thresholds
    assert loaded.thresholds.active == mixed_detector.thresholds.active
    np.testing.assert_array_equal(loaded.thresholds.calibration, mixed_detector.thresholds.calibration)
    assert loaded.manifest.training == json.loads(json.dumps(mixed_detector.manifest.training))


def test_saving_is_deterministic(saved: Path, tmp_path: Path):
    again = Detector.load(saved, device="cpu")
    again.save(tmp_path / "again")
    assert (tmp_path / "again" / WEIGHTS).read_bytes() == (saved / WEIGHTS).read_bytes()
    assert read_manifest(tmp_path / "again").model_id == read_manifest(saved).model_id


def test_changed_thresholds_are_saved(saved: Path):
    detector = Detector.load(saved, device="cpu")
    detector.thresholds = detector.thresholds.with_value("page", 42.0).with_active("page")
    detector.save(saved)
    loaded = Detector.load(saved, device="cpu")
    assert loaded.thresholds.active == "page"
    assert loaded.thresholds.thresholds["page"].value == 42.0
    assert loaded.thresholds.names == ("warn", "critical", "page")


def test_sample_variance_network_round_trips(train_tiny, make_mixed, tmp_path: Path):
    """numeric_variance="sample" has no shared log-variance parameter: the state dict differs."""
    detector = train_tiny(make_mixed(200, seed=5), epochs=3, numeric_variance="sample").detector
    assert "numeric_logvar" not in detector.network.state_dict()
    detector.save(tmp_path / "m")
    columns = detector.kind.columns_from_table(make_mixed(20, seed=6))
    np.testing.assert_allclose(
        Detector.load(tmp_path / "m", "cpu").terms(columns).score, detector.terms(columns).score, rtol=1e-6
    )


# -- corruption -----------------------------------------------------------------------------------


def _load_error(directory: Path) -> str:
    with pytest.raises(ArtifactError) as info:
        Detector.load(directory, device="cpu")
    return str(info.value)


def test_missing_directory(tmp_path: Path):
    message = _load_error(tmp_path / "nowhere")
    assert message.startswith(f"{tmp_path / 'nowhere'}: model directory not found")


def test_missing_manifest(saved: Path):
    (saved / MANIFEST).unlink()
    assert _load_error(saved).startswith(f"{saved / MANIFEST}: missing")


@pytest.mark.parametrize("content", ['{"format_version": 1, "kind": ', "", "\udcff"], ids=["truncated", "empty", "bad"])
def test_manifest_that_is_not_json(saved: Path, content: str):
    (saved / MANIFEST).write_bytes(content.encode("utf-8", "surrogateescape"))
    message = _load_error(saved)
    assert message.startswith(f"{saved / MANIFEST}: not valid JSON")


def test_manifest_that_is_not_an_object(saved: Path):
    (saved / MANIFEST).write_text("[1, 2]")
    assert _load_error(saved) == f"{saved / MANIFEST}: expected a JSON object"


@pytest.mark.parametrize("version", [1, 3, 0, "2", None])
def test_unknown_format_version(saved: Path, version: object):
    _edit_manifest(saved, format_version=version)
    message = _load_error(saved)
    assert message.startswith(f"{saved / MANIFEST}: format_version {version!r} is not supported")
    assert "retrain the model or upgrade vae-anomaly" in message


def test_version_1_artifacts_are_refused_with_a_retrain_message(saved: Path):
    """Version 1 (before the kind/family layout) had top-level schema and network fields."""
    raw = json.loads((saved / MANIFEST).read_text())
    old = {k: v for k, v in raw.items() if k not in ("kind_config", "family_config", "family")}
    old.update(format_version=1, **raw["kind_config"])
    write_manifest(saved, old)
    message = _load_error(saved)
    assert "format_version 1 is not supported" in message
    assert "retrain it with `vae-anomaly train`" in message


@pytest.mark.parametrize(
    ("field", "value", "expected"), [("kind", "sound", "kind 'sound'"), ("family", "gan", "family 'gan'")]
)
def test_unregistered_kind_or_family_is_refused(saved: Path, field: str, value: str, expected: str):
    _edit_manifest(saved, **{field: value})
    message = _load_error(saved)
    assert message.startswith(f"{saved / MANIFEST}: invalid manifest") and expected in message


def test_manifest_with_a_missing_field(saved: Path):
    raw = json.loads((saved / MANIFEST).read_text())
    del raw["kind_config"]["network"]
    write_manifest(saved, raw)
    message = _load_error(saved)
    assert message.startswith(f"{saved / MANIFEST}: invalid manifest")
    assert "network" in message


def test_manifest_with_an_unknown_field(saved: Path):
    _edit_manifest(saved, surprise=1)
    message = _load_error(saved)
    assert message.startswith(f"{saved / MANIFEST}: invalid manifest")
    assert "surprise" in message


def test_missing_weights(saved: Path):
    (saved / WEIGHTS).unlink()
    assert _load_error(saved) == f"{saved / WEIGHTS}: missing; the model directory is incomplete"


def test_truncated_weights(saved: Path):
    data = (saved / WEIGHTS).read_bytes()
    (saved / WEIGHTS).write_bytes(data[: len(data) // 2])
    message = _load_error(saved)
    assert message.startswith(f"{saved / WEIGHTS}: sha256 ")
    assert "does not match the manifest's" in message


def test_altered_weights(saved: Path):
    data = bytearray((saved / WEIGHTS).read_bytes())
    data[-3] ^= 0x01  # one bit of one float
    (saved / WEIGHTS).write_bytes(bytes(data))
    message = _load_error(saved)
    assert message.startswith(f"{saved / WEIGHTS}: sha256 ")
    assert read_manifest(saved).weights_sha256[:12] in message


def test_unreadable_weights_with_matching_checksum(saved: Path):
    (saved / WEIGHTS).write_bytes(b"not a safetensors file at all")
    _edit_manifest(saved, weights_sha256=artifact._sha256(saved / WEIGHTS))
    assert _load_error(saved).startswith(f"{saved / WEIGHTS}: unreadable safetensors file")


def test_weights_of_another_network(saved: Path, train_tiny, make_mixed, tmp_path: Path):
    other = train_tiny(make_mixed(200, seed=7), epochs=1, hidden_dims=[4]).detector
    other.save(tmp_path / "other")
    shutil.copyfile(tmp_path / "other" / WEIGHTS, saved / WEIGHTS)
    _edit_manifest(saved, weights_sha256=read_manifest(tmp_path / "other").weights_sha256)
    message = _load_error(saved)
    assert message.startswith(f"{saved / WEIGHTS}: weights do not fit the manifest's network")


def test_load_artifact_returns_cpu_tensors(saved: Path):
    manifest, tensors = load_artifact(saved)
    assert manifest.kind_config.network.hidden_dims == [16, 8]
    assert all(t.device.type == "cpu" for t in tensors.values())
    assert "encoder.0.weight" in tensors


# -- atomic saves ---------------------------------------------------------------------------------


def _hidden_leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


def test_failed_first_save_leaves_nothing(mixed_detector: Detector, tmp_path: Path, monkeypatch):
    def broken_save_file(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(artifact, "save_file", broken_save_file)
    with pytest.raises(OSError, match="disk full"):
        Detector(mixed_detector.manifest, mixed_detector.kind, mixed_detector.network, torch.device("cpu")).save(
            tmp_path / "model"
        )
    assert list(tmp_path.iterdir()) == []


def test_failed_save_keeps_the_previous_artifact(saved: Path, monkeypatch, fixed_columns):
    before = Detector.load(saved, "cpu")
    files = {p.name: p.read_bytes() for p in saved.iterdir()}

    def broken_save_file(tensors, filename, *args, **kwargs):
        Path(filename).write_bytes(b"partial")  # a half-written file in the staging dir
        raise OSError("disk full")

    monkeypatch.setattr(artifact, "save_file", broken_save_file)
    changed = Detector.load(saved, "cpu")
    changed.thresholds = changed.thresholds.with_value("warn", 0.0)
    with pytest.raises(OSError, match="disk full"):
        changed.save(saved)
    assert {p.name: p.read_bytes() for p in saved.iterdir()} == files
    assert _hidden_leftovers(saved.parent) == []
    after = Detector.load(saved, "cpu")
    np.testing.assert_array_equal(after.terms(fixed_columns).score, before.terms(fixed_columns).score)


def test_invalid_manifest_fields_fail_before_touching_the_directory(saved: Path):
    files = {p.name: p.read_bytes() for p in saved.iterdir()}
    _, tensors = load_artifact(saved)
    with pytest.raises(ValueError):
        artifact.save_artifact(saved, {"version": "x"}, tensors)  # most fields absent
    assert {p.name: p.read_bytes() for p in saved.iterdir()} == files
    assert _hidden_leftovers(saved.parent) == []


@pytest.mark.parametrize("failing_call", [1, 2], ids=["retire-old", "move-new-in"])
def test_failed_swap_keeps_the_previous_artifact(saved: Path, monkeypatch, failing_call: int):
    """Replacing an artifact takes two renames (old → aside, new → in place); whichever fails, the
    old artifact is where it was and no hidden directory is left behind."""
    files = {p.name: p.read_bytes() for p in saved.iterdir()}
    real_replace = os.replace
    calls = []

    def flaky_replace(src, dst):
        calls.append((Path(src), Path(dst)))
        if len(calls) == failing_call:
            raise OSError("rename failed")
        real_replace(src, dst)

    monkeypatch.setattr(artifact.os, "replace", flaky_replace)
    changed = Detector.load(saved, "cpu")
    changed.thresholds = changed.thresholds.with_value("warn", 0.0)
    with pytest.raises(OSError, match="rename failed"):
        changed.save(saved)
    monkeypatch.undo()
    assert calls[failing_call - 1][failing_call - 1] == saved  # (saved → aside) or (staging → saved)
    assert saved.is_dir()
    assert {p.name: p.read_bytes() for p in saved.iterdir()} == files
    assert _hidden_leftovers(saved.parent) == []


def test_saving_over_an_artifact_replaces_it(saved: Path, train_tiny, make_mixed):
    old_id = read_manifest(saved).model_id
    other = train_tiny(make_mixed(200, seed=8), epochs=2).detector
    manifest = other.save(saved)
    assert manifest.model_id != old_id
    assert read_manifest(saved).model_id == manifest.model_id
    assert Detector.load(saved, "cpu").manifest.model_id == manifest.model_id
    assert _hidden_leftovers(saved.parent) == []


# -- devices --------------------------------------------------------------------------------------


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_cuda_is_an_error(saved: Path):
    with pytest.raises(ArtifactError, match="device 'cuda' requested but CUDA is not available"):
        Detector.load(saved, device="cuda")


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_scores_match_cpu(saved: Path, fixed_columns):
    cpu = Detector.load(saved, "cpu").terms(fixed_columns)
    gpu = Detector.load(saved, "cuda").terms(fixed_columns)
    np.testing.assert_allclose(gpu.score, cpu.score, rtol=1e-4)
