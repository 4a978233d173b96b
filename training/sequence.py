"""Training a sequence model: scale the sensors on the training rows, cut time-ordered train /
validation / calibration windows, then the generic loop of `training.trainer.fit`.
`fit_sequence_detector` is what `vae-anomaly train --kind sequence` runs and what the SKAB
benchmark calls.

Calibration and exchangeability: conformal thresholds and p-values assume a new normal window's
score is exchangeable with the calibration scores. Overlapping windows share rows, so their scores
are strongly dependent and the finite-sample guarantee no longer holds (the effective number of
calibration scores is about the number of *disjoint* windows). By default (`calibration:
cross_fit`, `training.sequence_calibration`) the calibration scores cover every block of the
training rows, each scored by a model fitted without that block, so they sample the whole training
span instead of its last fifth; with `held_out` they come from the last part of each series,
after every training and validation row. Either way the windows overlap as little as the rows
allow: `calibration_stride_for` takes the largest stride up to the window that still gives
enough windows to resolve the active threshold's target rate (stride = window, no shared row, when
the rows suffice). The guarantee then rests on the stream being stationary, which drift (a rig
warming up) breaks: documented in docs/BENCHMARKS.md (SKAB).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import numpy as np

from vae_anomaly.model.kinds.sequence.backbone import SequenceBackboneConfig
from vae_anomaly.model.kinds.sequence.kind import SequenceInputs, SequenceKind, SequenceKindConfig, SequenceOptions
from vae_anomaly.model.kinds.sequence.preprocessing import consecutive_blocks, fit_scaling, slow_sensors
from vae_anomaly.model.kinds.sequence.windows import segment_bounds
from vae_anomaly.training.data import DataError
from vae_anomaly.training.sequence_calibration import Fitter, cross_fit_calibration, fold_blocks
from vae_anomaly.training.sequence_data import WindowSplit, pair_starts, split_windows, time_split_bounds
from vae_anomaly.training.trainer import TrainConfig, TrainResult, fit


def _inputs(windows: np.ndarray) -> SequenceInputs:
    return SequenceInputs(windows, np.arange(len(windows), dtype=np.int64))


def _slow_sensors(sensors: list[str], values: np.ndarray, train_pairs: np.ndarray) -> list[str]:
    """`slow_sensors` over consecutive blocks of the training rows of the longest series."""
    lo, hi = max(train_pairs.reshape(-1, 2).tolist(), key=lambda pair: pair[1] - pair[0])
    return slow_sensors(sensors, consecutive_blocks(values[lo:hi]))


def calibration_stride_for(cal_pairs: np.ndarray, window: int, target_fpr: float) -> int:
    """The default step between calibration windows: the largest stride <= `window` that still
    cuts enough windows from the calibration rows for a conformal threshold at `target_fpr`
    (ceil(1/a) - 1 windows: 99 for 0.01); 1 when even stride 1 gives fewer.

    Disjoint windows (stride = window) keep the calibration scores exchangeable; but a threshold
    from a handful of them is the largest of a handful, which a new normal window exceeds with
    probability ~1/(n + 1) (a third for n = 2: SKAB's 80 calibration rows). Overlap is the smaller
    harm: it makes neighbouring scores dependent, so the guarantee holds only approximately, with
    an effective sample size nearer the number of disjoint windows.
    """
    needed = math.ceil(1.0 / target_fpr) - 1
    lengths = [hi - lo for lo, hi in cal_pairs.reshape(-1, 2).tolist()]
    for stride in range(window, 0, -1):
        windows = sum(max(0, (n - window) // stride + 1) for n in lengths)
        if windows >= needed:
            return stride
    return 1


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
    options = _options(config)
    bounds = segment_bounds(None, len(values)) if bounds is None else bounds
    window = options.window
    train_pairs, _, cal_pairs = time_split_bounds(bounds, config.validation_fraction, config.calibration_fraction)
    target = config.thresholds.get(config.active_threshold, 0.01)
    calibration_stride = options.calibration_stride or calibration_stride_for(cal_pairs, window, target)
    train_rows = np.concatenate([np.arange(lo, hi) for lo, hi in train_pairs.reshape(-1, 2).tolist()])
    split = split_windows(
        values, bounds, window, options.stride, calibration_stride, config.validation_fraction,
        config.calibration_fraction,
    )  # fmt: skip
    kind_config = SequenceKindConfig(
        scaling=fit_scaling(sensors, values[train_rows]),
        network=_network(options, window, len(sensors)),
        stride=options.stride,
        calibration_stride=calibration_stride,
        time_column=time_column,
        series_column=series_column,
        relative_sensors=_relative(options, sensors, lambda: _slow_sensors(sensors, values, train_pairs)),
        sensor_dof=_dof(options),
    )
    result = _fit(SequenceKind(kind_config), split, config, version, progress, started)
    if options.calibration == "held_out":
        return result
    blocks = np.concatenate(fold_blocks(bounds, options.calibration_folds))
    stride = options.calibration_stride or calibration_stride_for(blocks, window, target)
    return cross_fit_calibration(
        result, values, bounds, config, options.calibration_folds, stride, _fold_fitter(sensors), version
    )


def _fold_fitter(sensors: list[str]) -> Fitter:
    """What a cross-fitted calibration fits on the rows outside a block: this same training."""
    return lambda values, config, bounds: fit_sequence_detector(values, sensors, config, bounds, progress=False)


def fit_sequence_windows(
    windows: np.ndarray,
    sensors: list[str],
    config: TrainConfig,
    version: str | None = None,
    progress: bool = True,
) -> TrainResult:
    """Train on ready-made normal windows (n, T, C) in sensor units, taken as time-ordered: the
    first windows train, the next validate, the last calibrate (the split never shuffles).

    The window length is T (a `window` option that differs is refused). Whether the windows overlap
    is the file's business: if they do, the calibration scores are dependent (see the module
    docstring) and the conformal guarantee weakens accordingly.
    """
    started = time.perf_counter()
    options = _options(config)
    n, window, channels = windows.shape
    if channels != len(sensors):
        raise DataError(f"windows have {channels} sensors but {len(sensors)} names were given")
    if "window" in config.kind_options and options.window != window:
        raise DataError(f"--window {options.window} given, but the file's windows have {window} steps")
    n_cal = round(n * config.calibration_fraction)
    n_val = round(n * config.validation_fraction)
    n_train = n - n_val - n_cal
    if n_train < 8 or n_val < 2 or n_cal < 2:
        raise DataError(f"{n} windows are too few to train (8), validate (2) and calibrate (2) in time order")
    split = WindowSplit(windows[:n_train], windows[n_train : n - n_cal], windows[n - n_cal :])
    kind_config = SequenceKindConfig(
        scaling=fit_scaling(sensors, split.train.reshape(-1, channels)),
        network=_network(options, window, channels),
        stride=1,
        calibration_stride=1,
        relative_sensors=_relative(
            options, sensors, lambda: slow_sensors(sensors, consecutive_blocks(split.train.reshape(-1, channels)))
        ),
        sensor_dof=_dof(options),
    )
    return _fit(SequenceKind(kind_config), split, config, version, progress, started)


def _options(config: TrainConfig) -> SequenceOptions:
    options = config.kind_options_for("sequence")
    assert isinstance(options, SequenceOptions)
    return options


def _network(options: SequenceOptions, window: int, sensors: int) -> SequenceBackboneConfig:
    return SequenceBackboneConfig(
        window=window,
        sensors=sensors,
        architecture=options.architecture,
        cell=options.cell,
        hidden_size=options.hidden_size,
        logvar_min=options.sensor_logvar_min,
    )


def _dof(options: SequenceOptions) -> int | None:
    return options.sensor_dof if options.sensor_likelihood == "student_t" else None


def _relative(options: SequenceOptions, sensors: list[str], slow: Callable[[], list[str]]) -> list[str]:
    """The sensors modelled relative to their window's level, by `options.level`."""
    if options.level == "auto":
        return slow()
    return list(sensors) if options.level == "relative" else []


def _fit(
    kind: SequenceKind, split: WindowSplit, config: TrainConfig, version: str | None, progress: bool, started: float
) -> TrainResult:
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


__all__ = [
    "calibration_stride_for",
    "fit_sequence_detector",
    "fit_sequence_windows",
    "pair_starts",
    "sequence_train_config",
]
