"""Training a tabular model: infer the schema, split the rows, fit the preprocessing statistics,
then the generic loop of `training.trainer.fit`. `fit_detector` is what `vae-anomaly train` runs on
tables and what the detection benchmark calls."""

from __future__ import annotations

import time

import numpy as np

from model.kinds.tabular.kind import TabularKind, TabularKindConfig, TabularOptions, tabular_network_config
from model.kinds.tabular.preprocessing import Columns, TabularCodec, check_columns, fit_preprocessing
from model.kinds.tabular.schema import Schema, infer_schema
from training.data import split_rows
from training.trainer import TrainConfig, TrainResult, fit


def fit_detector(
    columns: dict[str, np.ndarray],
    config: TrainConfig,
    schema_overrides: Schema | None = None,
    version: str | None = None,
    progress: bool = True,
) -> TrainResult:
    """Infer the schema, split, train with early stopping, calibrate thresholds; return a Detector.

    `columns` holds only normal rows. Deterministic for a given `config.seed` on the CPU.
    """
    started = time.perf_counter()
    options = config.kind_options_for("tabular")
    assert isinstance(options, TabularOptions)
    schema = infer_schema(columns, schema_overrides)
    checked = check_columns(schema, columns)
    n = len(next(iter(checked.values())))
    split = split_rows(n, config.validation_fraction, config.calibration_fraction, config.seed)

    def rows(index: np.ndarray) -> Columns:
        return {name: values[index] for name, values in checked.items()}

    preprocessing = fit_preprocessing(schema, rows(split.train))
    codec = TabularCodec(schema, preprocessing)
    kind = TabularKind(
        TabularKindConfig(schema=schema, preprocessing=preprocessing, network=tabular_network_config(codec, options))
    )
    batches = (kind.batch(rows(split.train)), kind.batch(rows(split.validation)), kind.batch(rows(split.calibration)))
    return fit(kind, split, batches, config, version, progress, started)
