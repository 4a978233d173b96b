"""Reading sensor streams (CSV with a sniffed or given delimiter, Parquet, NPZ windows) and
splitting them into train / validation / calibration windows in time order.

A file holds one row per time step: a time column, numeric (or boolean) sensor columns, and
optionally a series column when several independent series share the file. Rows are put in
(series, time) order here; `SensorTable.order` maps them back to the file's order, so scores can
be written one per input row in the input's order. An `.npz` with `X` of shape (n, T, C) holds
ready-made windows instead.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from vae_anomaly.model.kinds.sequence.windows import gather_windows, segment_bounds, window_starts
from vae_anomaly.training.data import DataError

if TYPE_CHECKING:
    import pandas as pd

SUPPORTED = (".csv", ".parquet", ".pq", ".npz")
SNIFF_BYTES = 64 * 1024
DELIMITERS = ",;\t|"


@dataclass
class SensorTable:
    """Sensor values in (series, time) order.

    values: (N, C) float64, NaN where a reading is missing; sensors: the C column names;
    bounds: `segment_bounds` of the series (start row of each, then N); order: (N,) the file row of
    each sorted row; times / series_ids / labels: per sorted row, or None when absent.
    """

    values: np.ndarray
    sensors: list[str]
    bounds: np.ndarray
    order: np.ndarray
    times: np.ndarray | None = None
    series_ids: np.ndarray | None = None
    labels: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.values.shape[0])


def sniff_delimiter(path: Path) -> str:
    """The delimiter of a CSV file from its first 64 KiB (one of , ; tab |); ',' when unsure."""
    with open(path, newline="", encoding="utf-8", errors="replace") as handle:
        sample = handle.read(SNIFF_BYTES)
    try:
        return csv.Sniffer().sniff(sample, delimiters=DELIMITERS).delimiter
    except csv.Error:
        return ","


def read_frame(path: Path, sep: str | None = None) -> pd.DataFrame:
    """A CSV (delimiter `sep`, or sniffed) or Parquet file as a DataFrame."""
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        try:
            return pd.read_csv(path, sep=sep or sniff_delimiter(path))
        except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
            raise DataError(f"{path}: not a readable CSV file: {exc}") from exc
    if suffix in (".parquet", ".pq"):
        try:
            return pd.read_parquet(path)
        except (OSError, ValueError) as exc:
            raise DataError(f"{path}: not a readable Parquet file: {exc}") from exc
    raise DataError(f"{path}: unsupported file type {suffix!r} for a sensor stream; use .csv, .parquet or .npz")


def _time_key(frame: pd.DataFrame, column: str, path: Path) -> np.ndarray:
    """Sortable time values: numbers as they are, anything else parsed as dates."""
    import pandas as pd

    series = frame[column]
    if series.isna().any():
        raise DataError(f"{path}: time column {column!r} has missing values (row {int(series.isna().argmax())})")
    if pd.api.types.is_numeric_dtype(series):
        return series.to_numpy()
    try:
        return pd.to_datetime(series).to_numpy()
    except (ValueError, TypeError) as exc:
        raise DataError(f"{path}: time column {column!r} is neither numbers nor dates: {exc}") from exc


def sensor_values(frame: pd.DataFrame, path: Path) -> np.ndarray:
    """Sensor columns → (N, C) float64 with NaN for missing; booleans become 0/1.

    Text (categorical) sensors are refused: exclude them (`--exclude-columns`) or encode them first.
    """
    import pandas as pd

    out = np.empty((len(frame), frame.shape[1]), dtype=np.float64)
    for j, name in enumerate(frame.columns):
        series = frame[name]
        if pd.api.types.is_bool_dtype(series) or pd.api.types.is_numeric_dtype(series):
            out[:, j] = series.to_numpy(dtype=np.float64, na_value=np.nan)
        else:
            raise DataError(
                f"{path}: sensor column {name!r} is not numeric (e.g. {series.dropna().iloc[0]!r}); "
                "sequence models take numeric or boolean sensors: drop it with --exclude-columns"
            )
    return out


def read_sensor_table(
    path: Path,
    time_column: str | None,
    series_column: str | None = None,
    label_column: str | None = None,
    exclude: list[str] | None = None,
    sep: str | None = None,
) -> SensorTable:
    """Read a sensor stream and put its rows in (series, time) order.

    Without a time column the file order is the time order. The sort is stable, so rows with equal
    timestamps keep their file order. Every other column not excluded is a sensor.
    """
    path = Path(path)
    frame = read_frame(path, sep)
    named = {"--time-column": time_column, "--series-column": series_column, "--label-column": label_column}
    for flag, column in [*named.items(), *(("--exclude-columns", c) for c in exclude or [])]:
        if column is not None and column not in frame.columns:
            raise DataError(
                f"{path}: {flag} names {column!r}, which is not a column; columns: {', '.join(frame.columns)}"
            )
    n = len(frame)
    keys = []  # np.lexsort sorts by the last key first
    times = _time_key(frame, time_column, path) if time_column else None
    if times is not None:
        keys.append(times)
    series_ids = frame[series_column].to_numpy() if series_column else None
    if series_ids is not None:
        # Series keep the order of their first appearance in the file.
        _, first, codes = np.unique(series_ids.astype(str), return_index=True, return_inverse=True)
        keys.append(np.argsort(np.argsort(first))[codes])
    order = np.lexsort([np.arange(n), *keys]) if keys else np.arange(n)
    labels = frame[label_column].to_numpy()[order] if label_column else None
    dropped = [c for c in (time_column, series_column, label_column, *(exclude or [])) if c]
    sensors = frame.drop(columns=dropped)
    if sensors.shape[1] == 0:
        raise DataError(f"{path}: no sensor columns left after removing {', '.join(dropped)}")
    sorted_ids = series_ids[order] if series_ids is not None else None
    return SensorTable(
        values=sensor_values(sensors, path)[order],
        sensors=[str(c) for c in sensors.columns],
        bounds=segment_bounds(sorted_ids, n),
        order=order,
        times=times[order] if times is not None else None,
        series_ids=sorted_ids,
        labels=labels,
    )


def read_window_npz(path: Path) -> np.ndarray:
    """Ready-made windows: an .npz with `X` of shape (n, T, C), as float64."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    with np.load(path, allow_pickle=False) as data:
        if "X" not in data:
            raise DataError(f"{path}: an .npz of windows needs an array named X of shape (windows, steps, sensors)")
        x = np.asarray(data["X"], dtype=np.float64)
    if x.ndim != 3 or min(x.shape) == 0:
        raise DataError(f"{path}: X has shape {x.shape}; sequence windows need shape (windows, steps, sensors)")
    return x


def window_sensor_names(path: Path, sensors: int) -> list[str]:
    """The sensor names of a windows .npz: its optional `sensors` array of C strings, else x0..x{C-1}
    (the names tabular .npz features get)."""
    with np.load(path, allow_pickle=False) as data:
        if "sensors" not in data:
            return [f"x{j}" for j in range(sensors)]
        names = [str(name) for name in np.asarray(data["sensors"]).reshape(-1).tolist()]
    if len(names) != sensors or len(set(names)) != len(names):
        raise DataError(f"{path}: `sensors` must hold {sensors} distinct names, one per channel of X; got {names}")
    return names


@dataclass
class WindowSplit:
    """Windows (n, T, C) of the three parts, each cut from its own time span of every series."""

    train: np.ndarray
    validation: np.ndarray
    calibration: np.ndarray


def time_split_bounds(
    bounds: np.ndarray, validation_fraction: float, calibration_fraction: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cut every series in time order: the first rows train, the next validate, the last calibrate.

    Returns the segment bounds of each part (as `segment_bounds` lays them out, on the same rows),
    so a window of one part never holds a row of another: overlapping windows across a random
    split would leak the calibration rows into training.
    """
    parts: list[list[int]] = [[], [], []]
    for start, end in zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True):
        n = end - start
        n_cal = round(n * calibration_fraction)
        n_val = round(n * validation_fraction)
        cut_val, cut_cal = end - n_cal - n_val, end - n_cal
        for part, (lo, hi) in zip(parts, [(start, cut_val), (cut_val, cut_cal), (cut_cal, end)], strict=True):
            part.extend([lo, hi])
    return tuple(np.array(p, dtype=np.int64) for p in parts)  # type: ignore[return-value]


def pair_starts(pairs: np.ndarray, window: int, stride: int) -> np.ndarray:
    """`window_starts` for bounds given as (start, end) pairs, which may leave gaps between them."""
    starts = [window_starts(np.array([lo, hi]), window, stride) for lo, hi in pairs.reshape(-1, 2).tolist()]
    return np.concatenate(starts) if starts else np.zeros(0, dtype=np.int64)


def split_windows(
    values: np.ndarray,
    bounds: np.ndarray,
    window: int,
    stride: int,
    calibration_stride: int,
    validation_fraction: float,
    calibration_fraction: float,
) -> WindowSplit:
    """Time-ordered train / validation / calibration windows of standardised values (N, C).

    Training and validation windows step by `stride`; calibration windows by `calibration_stride`
    (see the exchangeability note in `model.kinds.sequence` docs: a stride >= window makes the
    calibration windows share no row).
    """
    train_b, val_b, cal_b = time_split_bounds(bounds, validation_fraction, calibration_fraction)
    split = WindowSplit(
        train=gather_windows(values, pair_starts(train_b, window, stride), window),
        validation=gather_windows(values, pair_starts(val_b, window, stride), window),
        calibration=gather_windows(values, pair_starts(cal_b, window, calibration_stride), window),
    )
    for name in ("train", "validation", "calibration"):
        if len(getattr(split, name)) < (8 if name == "train" else 2):
            raise DataError(
                f"{len(values)} rows give {len(getattr(split, name))} {name} windows of {window} rows: too few; "
                "use a smaller --window, a smaller --stride or more data"
            )
    return split
