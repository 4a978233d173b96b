"""Reading training and scoring data (CSV, Parquet, NPZ) into columns, and splitting rows.

Columns are a dict of numpy arrays (see `model.kinds.tabular.preprocessing`); labels are split off here and never
reach the model.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from vae_anomaly.model.kinds.tabular.schema import Schema

if TYPE_CHECKING:
    import pandas as pd

SUPPORTED = (".csv", ".parquet", ".pq", ".npz")


class DataError(ValueError):
    """A data file that cannot be read or does not fit the request (absent label column, ...)."""


@dataclass
class Table:
    """Feature columns in file order, plus the labels when a label column was named or present."""

    columns: dict[str, np.ndarray]
    labels: np.ndarray | None  # raw label values, same length as the columns
    ids: list[object] | None = None  # --id-column values (None where empty): passed to results, never a feature

    def __len__(self) -> int:
        return len(next(iter(self.columns.values()))) if self.columns else 0

    def take(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        return {name: values[rows] for name, values in self.columns.items()}

    def rows(self, part: slice) -> Table:
        """The rows in `part` (see `holdout_rows`), with their labels and ids."""
        return Table(
            columns={name: values[part] for name, values in self.columns.items()},
            labels=None if self.labels is None else self.labels[part],
            ids=None if self.ids is None else self.ids[part],
        )


def holdout_rows(n: int, fraction: float, held_out: bool) -> slice:
    """`train --holdout F` trains on the first n - ⌈F·n⌉ rows (held_out False); `evaluate --holdout F`
    scores the last ⌈F·n⌉ (held_out True). File order, no shuffle: the two commands agree on the
    split without sharing a seed, and the evaluation rows never reached training."""
    cut = n - int(np.ceil(fraction * n))
    return slice(cut, n) if held_out else slice(0, cut)


def frame_columns(frame: pd.DataFrame) -> dict[str, np.ndarray]:
    """DataFrame → numpy columns: numeric dtypes as float64 or int, everything else as object with None."""
    import pandas as pd

    columns = {}
    for name in frame.columns:
        series = frame[name]
        if pd.api.types.is_bool_dtype(series) and not series.isna().any():
            columns[str(name)] = series.to_numpy(dtype=bool)
        elif pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series):
            columns[str(name)] = series.to_numpy(dtype=np.float64 if series.isna().any() else None)
        else:
            values = series.astype(object).where(series.notna(), None).to_numpy(dtype=object)
            columns[str(name)] = values
    return columns


def read_table(
    path: Path,
    label_column: str | None = None,
    exclude: list[str] | None = None,
    schema: Schema | None = None,
    id_column: str | None = None,
) -> Table:
    """Read a data file. NPZ: arrays X (n, d) → features x0..x{d-1}, optional y as the label.

    With a schema, categorical columns are read as text so codes like 007 keep their spelling.
    pandas is imported here, not at module level, so `vae-anomaly serve` never loads it.
    """
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    suffix = path.suffix.lower()
    if suffix == ".npz":
        with np.load(path, allow_pickle=False) as data:
            if "X" not in data:
                raise DataError(f"{path}: an .npz needs an array named X (rows × features)")
            x = np.asarray(data["X"])
            y = np.asarray(data["y"]) if "y" in data else None
        if x.ndim != 2:
            raise DataError(f"{path}: X has shape {x.shape}; a tabular .npz needs X of shape (rows, features)")
        frame = pd.DataFrame(x, columns=[f"x{i}" for i in range(x.shape[1])])
        if y is not None:
            if y.shape[0] != x.shape[0]:
                raise DataError(f"{path}: y has {y.shape[0]} rows but X has {x.shape[0]}")
            label_column = label_column or "y"
            frame[label_column] = y
    elif suffix == ".csv":
        text_columns = {f.name: str for f in schema.of_type("categorical")} if schema else None
        try:
            frame = pd.read_csv(path, dtype=text_columns, keep_default_na=True)
        except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
            raise DataError(f"{path}: not a readable CSV file: {exc}") from exc
    elif suffix in (".parquet", ".pq"):
        try:
            frame = pd.read_parquet(path)
        except (OSError, ValueError) as exc:
            raise DataError(f"{path}: not a readable Parquet file: {exc}") from exc
    else:
        raise DataError(f"{path}: unsupported file type {suffix!r}; use one of {', '.join(SUPPORTED)}")
    labels = None
    if label_column is not None:
        if label_column not in frame.columns:
            raise DataError(
                f"{path}: label column {label_column!r} not found; columns: {', '.join(map(str, frame.columns))}"
            )
        labels = frame.pop(label_column).to_numpy()
    ids = None
    if id_column is not None:
        if id_column not in frame.columns:
            raise DataError(f"{path}: id column {id_column!r} not found; columns: {', '.join(map(str, frame.columns))}")
        ids = [None if value != value else value for value in frame.pop(id_column).tolist()]  # NaN → None
    for name in exclude or []:
        if name not in frame.columns:
            raise DataError(f"{path}: --exclude-columns names {name!r}, which is not a column")
        frame = frame.drop(columns=name)
    if frame.shape[1] == 0:
        raise DataError(f"{path}: no feature columns left")
    return Table(columns=frame_columns(frame), labels=labels, ids=ids)


LABEL_NAMES = frozenset({"label", "labels", "target", "y", "class", "anomaly", "is_anomaly", "outlier", "ground_truth"})
ID_NAMES = frozenset({"id", "uuid", "guid", "index", "row", "row_id", "record_id", "key"})
MIN_ROWS_FOR_UNIQUE = 20  # below this, distinct values per row are common by chance


def suspicious_columns(columns: dict[str, np.ndarray]) -> dict[str, str]:
    """Feature columns that look like labels or row ids, each with the reason (name → reason).

    Learned as features, a label column lets the model "detect" anomalies only through it and makes
    the served model demand it in every request; an id column is unique per row and adds noise.
    Signs: the name (label/target/y/class..., id/*_id/uuid...), text unique in every row, or integers
    that increase by one step each row (a row number)."""
    found: dict[str, str] = {}
    for name, values in columns.items():
        lowered = name.strip().lower()
        n = len(values)
        if lowered in LABEL_NAMES:
            found[name] = "named like a label"
        elif lowered in ID_NAMES or lowered.endswith(("_id", "_uuid")) or name.endswith("Id"):
            found[name] = "named like an id"
        elif values.dtype == object and n >= MIN_ROWS_FOR_UNIQUE:
            present = [v for v in values.tolist() if v is not None]
            if len(present) == n and len(set(present)) == n:
                found[name] = "a different text value in every row (an id?)"
        elif values.dtype.kind in "iuf" and n >= MIN_ROWS_FOR_UNIQUE:
            numbers = values.astype(np.float64)
            steps = np.diff(numbers)
            integers = bool(np.all(np.isfinite(numbers)) and np.all(numbers == np.round(numbers)))
            if integers and steps[0] != 0 and np.all(steps == steps[0]):
                found[name] = "integers changing by a fixed step each row (a row number?)"
    return found


def normal_mask(labels: np.ndarray, normal_value: str | None) -> np.ndarray:
    """True for rows whose label equals the normal value (compared as text; default 0)."""
    wanted = "0" if normal_value is None else str(normal_value)
    as_text = np.array([_label_text(v) for v in labels.tolist()], dtype=object)
    mask = as_text == wanted
    if not mask.any():
        seen = sorted({str(v) for v in as_text.tolist()})[:10]
        raise DataError(f"no row has label {wanted!r} (the normal value); labels seen: {', '.join(seen)}")
    return mask


def anomaly_labels(labels: np.ndarray, normal_value: str | None) -> np.ndarray:
    """0 for normal rows, 1 for every other label (what the metrics expect)."""
    return (~normal_mask(labels, normal_value)).astype(np.int64)


def _label_text(value: object) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


@dataclass
class Split:
    """Row indices of the three disjoint parts of the normal training rows."""

    train: np.ndarray
    validation: np.ndarray
    calibration: np.ndarray


def split_rows(n: int, validation_fraction: float, calibration_fraction: float, seed: int) -> Split:
    """Shuffle n rows (seeded) and cut off validation and calibration parts.

    Calibration rows never take part in a gradient step nor in early stopping, so the scores they get
    are exchangeable with those of new normal records: the premise of the thresholds.
    """
    n_cal = round(n * calibration_fraction)
    n_val = round(n * validation_fraction)
    if n - n_cal - n_val < 8 or n_cal < 2 or n_val < 1:
        raise DataError(f"only {n} normal rows: too few to train, validate and calibrate (need about 50 or more)")
    order = np.random.default_rng(seed).permutation(n)
    return Split(train=order[n_cal + n_val :], validation=order[n_cal : n_cal + n_val], calibration=order[:n_cal])
