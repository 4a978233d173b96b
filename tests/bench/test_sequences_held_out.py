"""bench.sequences derives the held-out threshold beside the cross-fitted one from the same fit:
it must be exactly the threshold that training with `calibration=held_out` gives."""

from __future__ import annotations

import numpy as np
import pytest

from bench.sequences import ProjectFitted


def test_derived_held_out_threshold_is_the_held_out_training_threshold():
    rng = np.random.default_rng(0)
    t = np.arange(400)
    values = np.stack([np.sin(t / 3) + 0.05 * rng.normal(size=400), 0.01 * t + 0.05 * rng.normal(size=400)], 1)
    options = {"epochs": 2, "window": 10, "score_samples": 2, "seed": 1}
    cross_fit = ProjectFitted(values, ["a", "b"], options)
    held_out = ProjectFitted(values, ["a", "b"], {**options, "calibration": "held_out"})
    assert cross_fit.detector.kind.config.calibration == "cross_fit"
    assert held_out.derived_thresholds == {}
    assert cross_fit.derived_thresholds["held_out"] == pytest.approx(held_out.threshold, rel=1e-12)
    assert cross_fit.threshold != pytest.approx(held_out.threshold)
