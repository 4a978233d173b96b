"""Slow (drifting) sensors modelled relative to their window's level: which sensors, and what it does."""

from __future__ import annotations

import numpy as np
import pytest

from model.kinds.sequence.preprocessing import disjoint_windows, slow_sensors, window_levels
from training.sequence import fit_sequence_detector, sequence_train_config


def drifting_stream(n: int, seed: int = 0) -> np.ndarray:
    """pressure, flow: fast cycles around a fixed level; temperature: a slow climb with a little noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    return np.stack(
        [np.sin(t / 3) + 0.05 * rng.normal(size=n), np.cos(t / 3) + 0.05 * rng.normal(size=n),
         40 + 0.02 * t + 0.05 * rng.normal(size=n)], 1,
    )  # fmt: skip


def test_slow_sensors_are_those_whose_level_moves_between_windows():
    windows = disjoint_windows(drifting_stream(305), 10)
    assert windows.shape == (30, 10, 3)
    assert slow_sensors(["pressure", "flow", "temperature"], windows) == ["temperature"]
    assert slow_sensors(["a", "b", "c"], windows[:1]) == []  # one window decides nothing


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
