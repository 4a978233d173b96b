"""Training a sequence model: scale the sensors on the training rows, cut time-ordered train /
validation / calibration windows, then the generic loop of `training.trainer.fit`.
`fit_sequence_detector` is what `vae-anomaly train --kind sequence` runs and what the SKAB
benchmark calls.

Calibration and exchangeability: conformal thresholds and p-values assume a new normal window's
score is exchangeable with the calibration scores. Overlapping windows share rows, so their scores
are strongly dependent and the finite-sample guarantee no longer holds (the effective number of
calibration scores is about the number of *disjoint* windows). The calibration windows are
therefore cut with `calibration_stride` = the window by default (no shared row) from the last part
of each series, after every training and validation row; the guarantee then rests on the stream
being stationary, which drift (a rig warming up) breaks: documented in docs/BENCHMARKS.md.
"""

from __future__ import annotations

import time

import numpy as np

from model.kinds.sequence.backbone import SequenceBackboneConfig
from model.kinds.sequence.kind import SequenceInputs, SequenceKind, SequenceKindConfig, SequenceOptions
from model.kinds.sequence.preprocessing import fit_scaling, slow_sensors
from model.kinds.sequence.windows import segment_bounds
from training.sequence_data import pair_starts, split_windows, time_split_bounds
from training.trainer import TrainConfig, TrainResult, fit


def _inputs(windows: np.ndarray) -> SequenceInputs:
    return SequenceInputs(windows, np.arange(len(windows), dtype=np.int64))


def _slow_sensors(sensors: list[str], values: np.ndarray, train_pairs: np.ndarray, window: int) -> list[str]:
    """`slow_sensors` on the training rows of the longest series (the ratio ignores the scale)."""
    lo, hi = max(train_pairs.reshape(-1, 2).tolist(), key=lambda pair: pair[1] - pair[0])
    return slow_sensors(sensors, values[lo:hi], window)


def fit_sequence_detector(
    values: np.ndarray,
    sensors: list[str],
    config: TrainConfig,
    bounds: np.ndarray | None = None,
    version: str | None = None,
    progress: bool = True,
    time_column: str | None = None,
    series_column: str | None = None,
) -> TrainResult:
    """Train on normal rows (N, C) in sensor units (NaN = missing), time-ordered within each series
    (`bounds` from `segment_bounds`; one series when None)."""
    started = time.perf_counter()
    options = config.kind_options_for("sequence")
    assert isinstance(options, SequenceOptions)
    bounds = segment_bounds(None, len(values)) if bounds is None else bounds
    window = options.window
    calibration_stride = options.calibration_stride or window
    train_pairs, _, _ = time_split_bounds(bounds, config.validation_fraction, config.calibration_fraction)
    train_rows = np.concatenate([np.arange(lo, hi) for lo, hi in train_pairs.reshape(-1, 2).tolist()])
    scaling = fit_scaling(sensors, values[train_rows])
    split = split_windows(
        values, bounds, window, options.stride, calibration_stride, config.validation_fraction,
        config.calibration_fraction,
    )  # fmt: skip
    relative = {
        "absolute": [],
        "relative": list(sensors),
        "auto": _slow_sensors(sensors, values, train_pairs, window),
    }[options.level]
    network = SequenceBackboneConfig(
        window=window,
        sensors=len(sensors),
        architecture=options.architecture,
        cell=options.cell,
        hidden_size=options.hidden_size,
        logvar_min=options.sensor_logvar_min,
    )
    kind = SequenceKind(
        SequenceKindConfig(
            scaling=scaling,
            network=network,
            stride=options.stride,
            calibration_stride=calibration_stride,
            time_column=time_column,
            series_column=series_column,
            relative_sensors=relative,
        )
    )
    batches = (
        kind.batch(_inputs(split.train)),
        kind.batch(_inputs(split.validation)),
        kind.batch(_inputs(split.calibration)),
    )
    return fit(kind, split, batches, config, version, progress, started)  # type: ignore[arg-type]


SEQUENCE_DEFAULTS = {"epochs": 60, "patience": 10, "score_samples": 16}
"""Where sequence training departs from the tabular defaults: a few hundred windows of a stream
fit within tens of epochs (SKAB: best epochs ~15-40), and each posterior draw is a decoder pass
over T steps."""


def sequence_train_config(**fields: object) -> TrainConfig:
    """`TrainConfig` with the sequence defaults, then `fields`."""
    return TrainConfig(**{**SEQUENCE_DEFAULTS, **fields})  # type: ignore[arg-type]


__all__ = ["fit_sequence_detector", "pair_starts", "sequence_train_config"]
