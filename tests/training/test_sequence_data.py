"""training.sequence_data: reading sensor streams (delimiters, time order, series) and the
time-ordered train / validation / calibration split."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from vae_anomaly.training.data import DataError
from vae_anomaly.training.sequence_data import read_sensor_table, read_window_npz, split_windows, time_split_bounds

FRAME = pd.DataFrame(
    {
        "time": ["2024-01-01 00:00:02", "2024-01-01 00:00:00", "2024-01-01 00:00:01", "2024-01-01 00:00:00"],
        "machine": ["m1", "m1", "m1", "m2"],
        "temperature": [3.0, 1.0, 2.0, 10.0],
        "running": [True, False, True, True],
        "label": [0, 0, 1, 0],
    }
)


@pytest.mark.parametrize("sep", [",", ";", "\t"])
def test_csv_delimiter_is_sniffed_and_rows_sorted_by_time_within_series(tmp_path: Path, sep: str):
    path = tmp_path / "stream.csv"
    FRAME.to_csv(path, index=False, sep=sep)
    table = read_sensor_table(path, time_column="time", series_column="machine", label_column="label")
    assert table.sensors == ["temperature", "running"]
    assert table.values[:, 0].tolist() == [1.0, 2.0, 3.0, 10.0]
    assert table.values[:, 1].tolist() == [0.0, 1.0, 1.0, 1.0]
    assert table.order.tolist() == [1, 2, 0, 3]  # file row of each sorted row
    assert table.bounds.tolist() == [0, 3, 4]
    assert table.labels is not None and table.labels.tolist() == [0, 1, 0, 0]


def test_explicit_separator_and_parquet(tmp_path: Path):
    csv_path = tmp_path / "stream.csv"
    FRAME.to_csv(csv_path, index=False, sep="|")
    table = read_sensor_table(csv_path, "time", series_column="machine", sep="|")
    assert table.sensors == ["temperature", "running", "label"]
    parquet = tmp_path / "stream.parquet"
    FRAME.drop(columns="machine").to_parquet(parquet)
    table = read_sensor_table(parquet, "time", label_column="label")
    assert table.values[:, 0].tolist() == [1.0, 10.0, 2.0, 3.0]  # equal times keep file order (stable)
    assert table.bounds.tolist() == [0, 4]


def test_text_sensor_and_unknown_columns_are_refused(tmp_path: Path):
    path = tmp_path / "stream.csv"
    FRAME.to_csv(path, index=False)
    with pytest.raises(DataError, match="sensor column 'machine' is not numeric"):
        read_sensor_table(path, "time")
    with pytest.raises(DataError, match="--time-column names 'when'"):
        read_sensor_table(path, "when")
    with pytest.raises(DataError, match="--series-column names 'unit'"):
        read_sensor_table(path, "time", series_column="unit")


def test_window_npz(tmp_path: Path):
    path = tmp_path / "windows.npz"
    np.savez(path, X=np.zeros((4, 6, 2)))
    assert read_window_npz(path).shape == (4, 6, 2)
    np.savez(path, X=np.zeros((4, 6)))
    with pytest.raises(DataError, match=r"shape \(windows, steps, sensors\)"):
        read_window_npz(path)


def test_split_is_in_time_order_and_windows_stay_inside_their_part():
    n = 100
    values = np.arange(2 * n, dtype=np.float64)[:, None]  # the row index is the value
    bounds = np.array([0, n, 2 * n])  # two series
    train_b, val_b, cal_b = time_split_bounds(bounds, 0.1, 0.2)
    assert train_b.tolist() == [0, 70, 100, 170]
    assert val_b.tolist() == [70, 80, 170, 180]
    assert cal_b.tolist() == [80, 100, 180, 200]
    split = split_windows(values, bounds, window=5, stride=1, calibration_stride=5, validation_fraction=0.1,
                          calibration_fraction=0.2)  # fmt: skip
    for windows, pairs in ((split.train, train_b), (split.validation, val_b), (split.calibration, cal_b)):
        rows = windows[..., 0]
        inside = np.zeros(len(rows), dtype=bool)
        for lo, hi in pairs.reshape(-1, 2):
            inside |= (rows.min(1) >= lo) & (rows.max(1) < hi)
        assert inside.all()
    # Every calibration row comes after every training and validation row of its series.
    first_series = split.calibration[split.calibration[:, 0, 0] < n]
    assert first_series.min() >= 80 and split.train[split.train[:, 0, 0] < n].max() < 70
    # Calibration windows with stride = window share no row.
    assert len(np.unique(split.calibration)) == split.calibration.size
    assert len(split.calibration) == 8 and len(split.train) == 2 * 66


def test_split_refuses_too_little_data():
    with pytest.raises(DataError, match="too few"):
        split_windows(np.zeros((30, 2)), np.array([0, 30]), 10, 1, 10, 0.1, 0.2)
