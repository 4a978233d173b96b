"""Slow (drifting) sensors modelled relative to their window's level: which sensors, and what it does."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import drifting_stream
from vae_anomaly.model.kinds.sequence.preprocessing import consecutive_blocks, slow_sensors, window_levels
from vae_anomaly.training.sequence import fit_sequence_detector, sequence_train_config


def test_slow_sensors_are_those_whose_level_moves_between_windows():
    blocks = consecutive_blocks(drifting_stream(303))
    assert blocks.shape == (4, 75, 3)
    assert slow_sensors(["pressure", "flow", "temperature"], blocks) == ["temperature"]
    assert slow_sensors(["a", "b", "c"], blocks[:1]) == []  # one block decides nothing
    # A cycle longer than a model window (60 rows against 10) but shorter than a block is no drift.
    t = np.arange(800)
    cycle = np.sin(2 * np.pi * t / 60)[:, None]
    assert slow_sensors(["pressure"], consecutive_blocks(cycle)) == []


def test_window_levels_ignore_missing_readings():
    z = np.array([[[1.0, 5.0], [3.0, 0.0]]])  # (1, T=2, C=2)
    mask = np.array([[[True, False], [True, False]]])
    assert window_levels(z, mask).tolist() == [[2.0, 0.0]]


@pytest.fixture(scope="module")
def auto_detector():
    config = sequence_train_config(epochs=2, window=10, device="cpu", score_samples=2, level="auto")
    return fit_sequence_detector(drifting_stream(300), ["pressure", "flow", "temperature"], config, progress=False)


def test_auto_level_makes_a_shift_of_a_slow_sensor_invisible_and_reconstructs_in_sensor_units(auto_detector):
    detector = auto_detector.detector
    assert detector.kind.config.relative_sensors == ["temperature"]
    later = drifting_stream(40, seed=1)
    shifted = later.copy()
    shifted[:, 2] += 25.0  # the rig is 25 degrees warmer than in training
    inputs = detector.kind.inputs_from_rows(later)
    moved = detector.kind.inputs_from_rows(shifted)
    assert detector.terms(moved).score == pytest.approx(detector.terms(inputs).score, abs=1e-4)
    # A shift of a sensor kept absolute still costs.
    broken = later.copy()
    broken[:, 0] += 5.0
    assert np.all(detector.terms(detector.kind.inputs_from_rows(broken)).score > detector.terms(inputs).score)
    rebuilt = detector.reconstruct(moved)[0]["reconstruction"]["temperature"]
    assert np.mean(rebuilt) == pytest.approx(np.mean(shifted[:10, 2]), abs=1.0)


def test_calibration_stride_is_disjoint_when_the_rows_allow_and_shrinks_when_they_do_not():
    from vae_anomaly.training.sequence import calibration_stride_for

    many = np.array([0, 10_000])  # 10,000 calibration rows: 333 disjoint windows of 30 >= 99
    assert calibration_stride_for(many, 30, 0.01) == 30
    some = np.array([0, 600])  # 600 rows: stride 5 gives 115 windows, stride 6 only 96
    assert calibration_stride_for(some, 30, 0.01) == 5
    few = np.array([0, 80])  # SKAB: 80 rows give 51 windows at stride 1, the most there are
    assert calibration_stride_for(few, 30, 0.01) == 1
    assert calibration_stride_for(np.array([0, 300, 400, 700]), 30, 0.01) == 5  # two series, 300 rows each


def test_student_t_model_trains_saves_and_samples(tmp_path):
    from vae_anomaly.model.detector import load_detector

    config = sequence_train_config(epochs=1, window=10, device="cpu", score_samples=2, sensor_likelihood="student_t")
    result = fit_sequence_detector(drifting_stream(200), ["pressure", "flow", "temperature"], config, progress=False)
    assert result.detector.kind.config.sensor_dof == 4
    result.detector.save(tmp_path / "m")
    loaded = load_detector(tmp_path / "m", "cpu")
    inputs = loaded.kind.inputs_from_rows(drifting_stream(30, seed=3))
    assert loaded.terms(inputs).score == pytest.approx(result.detector.terms(inputs).score)
    samples = loaded.sample(3, seed=1)
    assert len(samples) == 3 and len(samples[0]["flow"]) == 10 and np.isfinite(samples[0]["flow"]).all()
