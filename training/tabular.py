"""Training a tabular model: infer the schema, split the rows, fit the preprocessing statistics,
then the generic loop of `training.trainer.fit`. `fit_detector` is what `vae-anomaly train` runs on
tables and what the detection benchmark calls."""

from __future__ import annotations

import time

import numpy as np

from vae_anomaly.model.conditions import fit_condition_spec
from vae_anomaly.model.errors import SchemaError
from vae_anomaly.model.kinds.tabular.kind import TabularKind, TabularKindConfig, TabularOptions, tabular_network_config
from vae_anomaly.model.kinds.tabular.preprocessing import Columns, TabularCodec, check_columns, fit_preprocessing
from vae_anomaly.model.kinds.tabular.schema import Schema, infer_schema
from vae_anomaly.training.data import split_rows
from vae_anomaly.training.trainer import TrainConfig, TrainResult, fit


def fit_detector(
    columns: dict[str, np.ndarray],
    config: TrainConfig,
    schema_overrides: Schema | None = None,
    version: str | None = None,
    progress: bool = True,
) -> TrainResult:
    """Infer the schema, split, train with early stopping, calibrate thresholds; return a Detector.

    `columns` holds only normal rows. Deterministic for a given `config.seed` on the CPU. The
    `condition_columns` option takes those columns out of the features: they become the
    condition (`model.conditions`) of a conditional family, whose values are recorded in the
    manifest and required in every scored record.
    """
    started = time.perf_counter()
    options = config.kind_options_for("tabular")
    assert isinstance(options, TabularOptions)
    condition = None
    if options.condition_columns:
        try:
            condition = fit_condition_spec(columns, options.condition_columns)
        except ValueError as exc:
            raise SchemaError(str(exc)) from exc
        named = sorted(
            set(options.condition_columns) & {f.name for f in (schema_overrides.features if schema_overrides else [])}
        )
        if named:
            raise SchemaError(f"--schema describes condition columns {', '.join(named)}: a condition is not a feature")
        context = {name: np.asarray(columns[name]) for name in options.condition_columns}
        columns = {name: values for name, values in columns.items() if name not in context}
        if not columns:
            raise SchemaError("every column is a condition column: a conditional model needs features to score")
    schema = infer_schema(columns, schema_overrides)
    checked = check_columns(schema, columns)
    n = len(next(iter(checked.values())))
    split = split_rows(n, config.validation_fraction, config.calibration_fraction, config.seed)

    if condition is not None:  # checked columns carry each condition's value positions
        checked.update(
            {
                variable.name: np.array([variable.index(v) for v in context[variable.name].tolist()], dtype=np.int64)
                for variable in condition.variables
            }
        )

    def rows(index: np.ndarray) -> Columns:
        return {name: values[index] for name, values in checked.items()}

    preprocessing = fit_preprocessing(schema, rows(split.train), options.numeric_scaling)
    codec = TabularCodec(schema, preprocessing)
    kind = TabularKind(
        TabularKindConfig(
            schema=schema,
            preprocessing=preprocessing,
            network=tabular_network_config(codec, options),
            condition=condition,
        )
    )
    batches = (kind.batch(rows(split.train)), kind.batch(rows(split.validation)), kind.batch(rows(split.calibration)))
    return fit(kind, split, batches, config, version, progress, started)
