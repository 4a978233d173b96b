"""Cross-fitted calibration of sequence models: blocks, gaps no window spans, out-of-fold scores,
what the manifest records, and the fallback when the rows are too few for fold fits."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from tests.conftest import drifting_stream
from vae_anomaly.model.kinds.sequence.windows import window_starts
from vae_anomaly.model.thresholds import threshold_for_fpr
from vae_anomaly.training.sequence import calibration_stride_for, fit_sequence_detector, sequence_train_config
from vae_anomaly.training.sequence_calibration import cross_fitted_scores, fold_blocks, without_block

SENSORS = ["pressure", "flow", "temperature"]


def stream(n: int, seed: int = 0) -> np.ndarray:
    return drifting_stream(n, seed, climb=0.01)


def test_blocks_tile_every_series_and_the_rest_is_cut_at_the_gap():
    bounds = np.array([0, 100, 150])  # two series: 100 and 50 rows
    blocks = fold_blocks(bounds, 5)
    assert [b.tolist() for b in blocks[:2]] == [[[0, 20], [100, 110]], [[20, 40], [110, 120]]]
    covered = np.concatenate([np.arange(lo, hi) for b in blocks for lo, hi in b.tolist()])
    assert sorted(covered.tolist()) == list(range(150))
    values = np.arange(150, dtype=float)[:, None]
    kept, kept_bounds = without_block(values, bounds, blocks[1])
    assert kept[:, 0].tolist() == [*range(20), *range(40, 110), *range(120, 150)]
    assert kept_bounds.tolist() == [0, 20, 80, 90, 120]  # each series: the part before its block, then after
    for start in window_starts(kept_bounds, 10).tolist():  # no window joins rows across a removed block
        rows = kept[start : start + 10, 0]
        assert np.all(np.diff(rows) == 1)


def test_each_block_is_scored_by_a_model_fitted_without_it():
    values, bounds = stream(200), np.array([0, 200])
    seen: list[np.ndarray] = []

    class Fitted:
        def __init__(self, rows: np.ndarray):
            self.rows = rows

        @property
        def detector(self):
            return self

        def terms(self, inputs):
            seen.append(inputs.windows)
            trained = {tuple(r) for r in self.rows.round(9).tolist()}
            overlap = [any(tuple(r) in trained for r in w.round(9).tolist()) for w in inputs.windows]
            return type("T", (), {"score": np.array(overlap, dtype=float)})()

    scores = cross_fitted_scores(values, bounds, sequence_train_config(), 4, 5, 10, lambda v, c, b: Fitted(v))
    assert len(scores) == 4 * ((50 - 10) // 5 + 1) and not scores.any()  # no scored row was trained on
    assert sum(len(w) for w in seen) == len(scores)


def test_default_training_calibrates_on_cross_fitted_scores_and_the_manifest_says_so():
    config = sequence_train_config(epochs=2, window=10, device="cpu", score_samples=2)
    result = fit_sequence_detector(stream(400), SENSORS, config, progress=False)
    kind_config = result.detector.kind.config
    assert kind_config.calibration == "cross_fit" and kind_config.calibration_folds == 5
    blocks = np.concatenate(fold_blocks(np.array([0, 400]), 5))
    stride = calibration_stride_for(blocks, 10, 0.01)
    assert kind_config.calibration_stride == stride
    n = 5 * ((80 - 10) // stride + 1)
    calibration = np.sort(result.detector.thresholds.calibration)
    assert len(calibration) == n == result.summary["rows"]["calibration"]
    assert result.detector.thresholds.thresholds["warn"].value == threshold_for_fpr(calibration, 0.01)
    held_out = fit_sequence_detector(
        stream(400), SENSORS, sequence_train_config(epochs=2, window=10, device="cpu", score_samples=2,
                                                    calibration="held_out"), progress=False,
    )  # fmt: skip
    assert held_out.detector.kind.config.calibration == "held_out"
    inputs = held_out.detector.kind.inputs_from_rows(stream(60, seed=4))
    # same served network (same seed and split); only the calibration differs
    assert result.detector.terms(inputs).score == pytest.approx(held_out.detector.terms(inputs).score)
    assert len(held_out.detector.thresholds.calibration) != n


def test_rows_too_few_for_fold_fits_fall_back_to_held_out_calibration(caplog):
    config = sequence_train_config(epochs=1, window=10, device="cpu", score_samples=2)
    with caplog.at_level(logging.WARNING, logger="vae_anomaly.training.sequence_calibration"):
        result = fit_sequence_detector(stream(120), SENSORS, config, progress=False)
    assert result.detector.kind.config.calibration == "held_out"
    assert "cross-fitted calibration skipped" in caplog.text
