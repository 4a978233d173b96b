"""`vae-anomaly train` / `score` on sensor streams: read the file, train, write one score per row."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import orjson

from vae_anomaly.model.detector import Detector
from vae_anomaly.model.kinds.sequence.kind import SequenceInputs, SequenceKind
from vae_anomaly.training.data import DataError
from vae_anomaly.training.sequence import fit_sequence_detector, fit_sequence_windows
from vae_anomaly.training.sequence_data import read_sensor_table, read_window_npz, window_sensor_names
from vae_anomaly.training.trainer import TrainConfig, training_report


def _sequence_kind(detector: Detector) -> SequenceKind:
    assert isinstance(detector.kind, SequenceKind)
    return detector.kind


def train_sequences(args: argparse.Namespace, config: TrainConfig) -> int:
    """Train on a stream whose rows are all normal (rows with a label other than the normal value
    are not dropped: that would cut windows across the gap; train on a normal stretch instead), or
    on an .npz of ready-made windows `X` (n, T, C), oldest first."""
    if args.data.suffix.lower() == ".npz":
        windows = read_window_npz(args.data)
        sensors = window_sensor_names(args.data, windows.shape[2])
        result = fit_sequence_windows(windows, sensors, config, version=args.model_version, progress=not args.quiet)
    else:
        table = read_sensor_table(
            args.data, args.time_column, args.series_column, args.label_column, args.exclude_columns, args.sep
        )
        result = fit_sequence_detector(
            table.values,
            table.sensors,
            config,
            table.bounds,
            version=args.model_version,
            progress=not args.quiet,
            time_column=args.time_column,
            series_column=args.series_column,
        )
    if not result.world.is_writer:  # torchrun: rank 0 alone writes the artifact
        return 0
    manifest = result.detector.save(args.out)
    print(f"model {manifest.model_id} (version {manifest.version}) written to {args.out}")
    print("\n".join(training_report(manifest, result.summary, "window", 4)))
    return 0


def score_windows(detector: Detector, path: Path, explain: int) -> list[dict[str, object]]:
    """One result per window of a windows .npz (`row` = the window's index), in the file's order."""
    kind = _sequence_kind(detector)
    windows = read_window_npz(path)
    sensors = window_sensor_names(path, windows.shape[2])
    if windows.shape[1] != kind.window:
        raise DataError(f"{path}: windows of {windows.shape[1]} steps; the model's window is {kind.window}")
    missing = [s for s in kind.sensors if s not in sensors]
    if missing:
        raise DataError(f"{path}: sensor {missing[0]!r} of the model is not among the file's sensors {sensors}")
    windows = windows[:, :, [sensors.index(s) for s in kind.sensors]]
    inputs = SequenceInputs(windows, np.arange(len(windows), dtype=np.int64))
    return detector.results(detector.score(inputs), explain)


def score_rows(detector: Detector, args: argparse.Namespace) -> list[dict[str, object]]:
    """One result per input row, in the file's order; rows that close no window (the first
    `window - 1` of each series) get score, p_value and is_anomaly null. A windows .npz gets one
    result per window instead."""
    if Path(args.data).suffix.lower() == ".npz":
        return score_windows(detector, Path(args.data), args.explain)
    kind = _sequence_kind(detector)
    config = kind.config
    table = read_sensor_table(args.data, config.time_column, config.series_column, sep=getattr(args, "sep", None))
    missing = [s for s in kind.sensors if s not in table.sensors]
    if missing:
        raise DataError(f"{args.data}: sensor column {missing[0]!r} of the model is missing")
    values = table.values[:, [table.sensors.index(s) for s in kind.sensors]]
    inputs = kind.inputs_from_rows(values, table.bounds)
    results = detector.results(detector.score(inputs), args.explain) if len(inputs) else []
    empty: dict[str, object] = {
        "score": None,
        "p_value": None,
        "is_anomaly": None,
        "thresholds_exceeded": [],
        "top_sensors": [],
    }
    by_file_row: list[dict[str, object]] = [dict(empty) for _ in range(len(table))]
    for result in results:
        sorted_row = int(result.pop("row"))  # type: ignore[call-overload]
        by_file_row[int(table.order[sorted_row])] = result
    for i, result in enumerate(by_file_row):
        result["row"] = i
    return by_file_row


def _flat(result: dict[str, object]) -> dict[str, object]:
    row = {key: result.get(key) for key in ("row", "score", "p_value", "is_anomaly")}
    row["thresholds_exceeded"] = ";".join(result["thresholds_exceeded"])  # type: ignore[arg-type]
    row["top_sensors"] = ";".join(s["sensor"] for s in result["top_sensors"])  # type: ignore[attr-defined,union-attr]
    return row


def score_sequences_file(args: argparse.Namespace, detector: Detector) -> int:
    """`vae-anomaly score` for sequence models: JSON lines (with `top_sensors`), CSV or Parquet."""
    results = score_rows(detector, args)
    if args.out is None:
        sys.stdout.buffer.write(b"".join(orjson.dumps(r) + b"\n" for r in results))
        sys.stdout.buffer.flush()
        return 0
    suffix = args.out.suffix.lower()
    if suffix == ".jsonl":
        args.out.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in results))
    elif suffix in (".csv", ".parquet"):
        import pandas as pd

        frame = pd.DataFrame([_flat(r) for r in results])
        frame["score"] = frame["score"].astype(np.float64)
        if suffix == ".csv":
            frame.to_csv(args.out, index=False)
        else:
            frame.to_parquet(args.out, index=False)
    else:
        raise DataError(f"{args.out}: --out must end in .csv, .parquet or .jsonl")
    print(f"{len(results)} rows scored → {args.out}", file=sys.stderr)
    return 0
