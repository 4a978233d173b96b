"""`vae-anomaly encode MODEL FILE --out latent.parquet|.npz|.csv`: the latent code of every input of
a file (records, images, or the windows of a sensor stream), through `Detector.encode`, the path
`POST /encode` takes.

Outputs: an .npz with `mean` (N, L), `std` (N, L) where the family has a posterior, `y` (the raw
labels, when the file has them) and `row` (sequences: the file row that closes each window); or a
table (.parquet, .csv) with one row per input and columns `mean_0..`, `std_0..`, `label`, `row`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vae_anomaly.model.detector import Detector
from vae_anomaly.model.kinds.image.kind import ImageKind
from vae_anomaly.model.kinds.sequence.kind import SequenceKind
from vae_anomaly.model.kinds.tabular.kind import TabularKind
from vae_anomaly.model.latent import LatentCode
from vae_anomaly.training.data import DataError, read_table
from vae_anomaly.training.image_data import read_images
from vae_anomaly.training.sequence_data import read_sensor_table

OUTPUTS = (".npz", ".parquet", ".csv")


@dataclass
class FileInputs:
    """Checked inputs read from a file, with what the output carries beside each code."""

    inputs: Any
    labels: np.ndarray | None = None  # raw label values, one per input
    rows: np.ndarray | None = None  # sequences: the file row closing each window


def _tabular(detector: Detector, args: argparse.Namespace) -> FileInputs:
    kind = detector.kind
    assert isinstance(kind, TabularKind)
    table = read_table(args.data, args.label_column, schema=kind.schema)
    return FileInputs(kind.columns_from_table(table.columns), table.labels)


def _images(detector: Detector, args: argparse.Namespace) -> FileInputs:
    kind = detector.kind
    assert isinstance(kind, ImageKind)
    images = read_images(args.data, args.labels)
    conditions = images.labels if kind.condition_spec() is not None else None  # a cvae's labels are its conditions
    return FileInputs(kind.inputs_from_array(images.pixels, conditions), images.labels)


def _sequences(detector: Detector, args: argparse.Namespace) -> FileInputs:
    """Every window of the stream (those closing at each row after the first window − 1 of each
    series), with the row of the file that closes it."""
    kind = detector.kind
    assert isinstance(kind, SequenceKind)
    config = kind.config
    table = read_sensor_table(args.data, config.time_column, config.series_column, sep=args.sep)
    missing = [s for s in kind.sensors if s not in table.sensors]
    if missing:
        raise DataError(f"{args.data}: sensor column {missing[0]!r} of the model is missing")
    inputs = kind.inputs_from_rows(table.values[:, [table.sensors.index(s) for s in kind.sensors]], table.bounds)
    if not len(inputs):
        raise DataError(f"{args.data}: {len(table)} rows close no window of {kind.window} rows")
    return FileInputs(inputs, rows=np.asarray(table.order)[inputs.rows])


READERS: dict[str, Callable[[Detector, argparse.Namespace], FileInputs]] = {
    "tabular": _tabular,
    "image": _images,
    "sequence": _sequences,
}


def write_codes(path: Path, code: LatentCode, labels: np.ndarray | None, rows: np.ndarray | None) -> None:
    """Write the codes as .npz arrays or as a table (see the module docstring)."""
    suffix = path.suffix.lower()
    if suffix == ".npz":
        arrays = {"mean": code.mean}
        if code.std is not None:
            arrays["std"] = code.std
        if labels is not None:
            arrays["y"] = labels if labels.dtype != object else labels.astype(str)
        if rows is not None:
            arrays["row"] = rows
        np.savez_compressed(path, **arrays)  # type: ignore[arg-type]
        return
    import pandas as pd

    columns: dict[str, Any] = {}
    if rows is not None:
        columns["row"] = rows
    columns |= {f"mean_{j}": code.mean[:, j] for j in range(code.latent_dim)}
    if code.std is not None:
        columns |= {f"std_{j}": code.std[:, j] for j in range(code.latent_dim)}
    if labels is not None:
        columns["label"] = labels
    frame = pd.DataFrame(columns)
    if suffix == ".parquet":
        frame.to_parquet(path, index=False)
    else:
        frame.to_csv(path, index=False)


def encode_command(args: argparse.Namespace) -> int:
    """Read the file by the model's kind, encode it in chunks, write `--out`."""
    suffix = args.out.suffix.lower()
    if suffix not in OUTPUTS:
        raise DataError(f"{args.out}: --out must end in {', '.join(OUTPUTS)}")
    detector = Detector.load(args.model_dir, args.device)
    read = READERS.get(detector.kind.name)
    if read is None:
        raise DataError(f"encode does not read files for {detector.kind.name} models yet")
    file_inputs = read(detector, args)
    code = detector.encode(file_inputs.inputs)
    write_codes(args.out, code, file_inputs.labels, file_inputs.rows)
    std = "mean and std" if code.std is not None else f"code only (family {detector.family.name!r} has no posterior)"
    print(
        f"{len(code)} {detector.kind.result_unit}s encoded, latent dim {code.latent_dim}, {std} → {args.out}",
        file=sys.stderr,
    )
    return 0
