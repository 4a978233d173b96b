"""training.data: reading CSV, Parquet and NPZ into columns, labels, and the row split."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from vae_anomaly.model.kinds.tabular.schema import FeatureSpec, Schema
from vae_anomaly.training.data import (
    DataError,
    Table,
    anomaly_labels,
    normal_mask,
    read_table,
    split_rows,
    suspicious_columns,
)

FRAME = pd.DataFrame(
    {
        "amount": [1.5, np.nan, 3.25, 4.0],
        "items": [1, 2, 3, 4],
        "code": ["007", "012", None, "007"],
        "flag": [True, False, True, True],
        "label": [0, 0, 1, 0],
    }
)


def _check_columns(table: Table) -> None:
    assert list(table.columns) == ["amount", "items", "code", "flag"]
    assert len(table) == 4
    assert table.columns["amount"].dtype == np.float64 and np.isnan(table.columns["amount"][1])
    assert table.columns["items"].dtype.kind == "i" and table.columns["items"].tolist() == [1, 2, 3, 4]
    assert table.columns["flag"].dtype == bool
    assert table.labels is not None and table.labels.tolist() == [0, 0, 1, 0]


def test_read_csv(tmp_path: Path):
    path = tmp_path / "data.csv"
    FRAME.to_csv(path, index=False)
    table = read_table(path, label_column="label")
    _check_columns(table)
    # Without a schema, pandas reads codes as numbers; with one, a categorical keeps its spelling.
    assert table.columns["code"].dtype == np.float64
    schema = Schema(features=[FeatureSpec(name="code", type="categorical")])
    code = read_table(path, "label", schema=schema).columns["code"]
    assert code.dtype == object and code.tolist() == ["007", "012", None, "007"]


@pytest.mark.parametrize("suffix", [".parquet", ".pq"])
def test_read_parquet(tmp_path: Path, suffix: str):
    path = tmp_path / f"data{suffix}"
    FRAME.to_parquet(path, index=False)
    table = read_table(path, label_column="label")
    _check_columns(table)
    assert table.columns["code"].dtype == object and table.columns["code"].tolist() == ["007", "012", None, "007"]


def test_read_parquet_with_missing_booleans(tmp_path: Path):
    path = tmp_path / "data.parquet"
    pd.DataFrame({"flag": pd.array([True, None, False], dtype="boolean")}).to_parquet(path)
    values = read_table(path).columns["flag"]
    assert values.dtype == object and values.tolist() == [True, None, False]


def test_read_npz_with_labels(tmp_path: Path):
    path = tmp_path / "data.npz"
    x = np.arange(12, dtype=float).reshape(4, 3)
    np.savez(path, X=x, y=np.array([0, 1, 0, 0]))
    table = read_table(path)
    assert list(table.columns) == ["x0", "x1", "x2"]
    np.testing.assert_array_equal(table.columns["x1"], [1.0, 4.0, 7.0, 10.0])
    assert table.labels is not None and table.labels.tolist() == [0, 1, 0, 0]
    # a label column name just renames y
    assert read_table(path, label_column="target").labels.tolist() == [0, 1, 0, 0]


def test_read_npz_without_labels(tmp_path: Path):
    path = tmp_path / "data.npz"
    np.savez(path, X=np.zeros((3, 2)))
    table = read_table(path)
    assert list(table.columns) == ["x0", "x1"] and table.labels is None


def test_exclude_columns(tmp_path: Path):
    path = tmp_path / "data.csv"
    FRAME.to_csv(path, index=False)
    table = read_table(path, exclude=["code", "label"])
    assert list(table.columns) == ["amount", "items", "flag"] and table.labels is None
    with pytest.raises(DataError, match=r"--exclude-columns names 'id', which is not a column"):
        read_table(path, exclude=["id"])


def test_table_take(tmp_path: Path):
    path = tmp_path / "data.csv"
    FRAME.to_csv(path, index=False)
    taken = read_table(path, "label").take(np.array([3, 0]))
    assert taken["items"].tolist() == [4, 1]


# -- errors ---------------------------------------------------------------------------------------


def test_missing_label_column_names_file_and_columns(tmp_path: Path):
    path = tmp_path / "data.csv"
    FRAME.to_csv(path, index=False)
    with pytest.raises(DataError) as info:
        read_table(path, label_column="is_fraud")
    assert str(info.value) == f"{path}: label column 'is_fraud' not found; columns: amount, items, code, flag, label"


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"data": np.zeros((2, 2))}, "an .npz needs an array named X"),
        ({"X": np.zeros(5)}, r"X has shape \(5,\); a tabular .npz needs X of shape \(rows, features\)"),
        ({"X": np.zeros((4, 2)), "y": np.zeros(3)}, "y has 3 rows but X has 4"),
    ],
)
def test_bad_npz(tmp_path: Path, arrays: dict, message: str):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(DataError, match=message) as info:
        read_table(path)
    assert str(info.value).startswith(f"{path}: ")


def test_missing_file(tmp_path: Path):
    with pytest.raises(DataError, match="file not found"):
        read_table(tmp_path / "nope.csv")


def test_unsupported_suffix(tmp_path: Path):
    path = tmp_path / "data.xlsx"
    path.write_text("x")
    with pytest.raises(DataError, match=r"unsupported file type '.xlsx'; use one of .csv, .parquet, .pq, .npz"):
        read_table(path)


def test_unreadable_csv_and_parquet(tmp_path: Path):
    csv = tmp_path / "bad.csv"
    csv.write_bytes(b"a,b\n\xff\xfe,\x80\n")
    with pytest.raises(DataError, match="not a readable CSV file"):
        read_table(csv)
    parquet = tmp_path / "bad.parquet"
    parquet.write_text("definitely not parquet")
    with pytest.raises(DataError, match="not a readable Parquet file"):
        read_table(parquet)


def test_no_feature_columns_left(tmp_path: Path):
    path = tmp_path / "data.csv"
    pd.DataFrame({"label": [0, 1]}).to_csv(path, index=False)
    with pytest.raises(DataError, match="no feature columns left"):
        read_table(path, label_column="label")


# -- labels ---------------------------------------------------------------------------------------


def test_normal_mask_compares_labels_as_text():
    labels = np.array([0, 1, 0.0, "0", "fraud", 2.5], dtype=object)
    assert normal_mask(labels, None).tolist() == [True, False, True, True, False, False]
    assert normal_mask(np.array(["ok", "fraud", "ok"]), "ok").tolist() == [True, False, True]
    assert normal_mask(np.array([1.0, 2.0]), "2").tolist() == [False, True]


def test_normal_mask_without_normal_rows_lists_labels():
    with pytest.raises(DataError, match=r"no row has label '0' \(the normal value\); labels seen: a, b"):
        normal_mask(np.array(["b", "a", "b"]), None)


def test_anomaly_labels():
    out = anomaly_labels(np.array([0, 1, 2, 0]), None)
    assert out.dtype == np.int64 and out.tolist() == [0, 1, 1, 0]
    assert anomaly_labels(np.array(["ok", "bad"]), "ok").tolist() == [0, 1]


# -- split_rows -----------------------------------------------------------------------------------


def test_split_rows_is_disjoint_complete_and_seeded():
    split = split_rows(1000, 0.1, 0.2, seed=3)
    assert (len(split.train), len(split.validation), len(split.calibration)) == (700, 100, 200)
    parts = [set(split.train.tolist()), set(split.validation.tolist()), set(split.calibration.tolist())]
    assert not (parts[0] & parts[1]) and not (parts[0] & parts[2]) and not (parts[1] & parts[2])
    assert parts[0] | parts[1] | parts[2] == set(range(1000))
    again = split_rows(1000, 0.1, 0.2, seed=3)
    np.testing.assert_array_equal(again.calibration, split.calibration)
    assert not np.array_equal(split_rows(1000, 0.1, 0.2, seed=4).calibration, split.calibration)


def test_split_rows_too_few_rows():
    split_rows(12, 0.1, 0.2, seed=0)  # 9 train, 1 validation, 2 calibration: just enough
    with pytest.raises(DataError, match="only 10 normal rows: too few to train, validate and calibrate"):
        split_rows(10, 0.1, 0.2, seed=0)
    with pytest.raises(DataError, match="only 1000 normal rows"):
        split_rows(1000, 0.1, 0.0001, seed=0)  # no calibration row


def test_suspicious_columns_name_labels_ids_and_row_numbers():
    """Issue 14 item 5: without --label-column, `label` and `record_id` were learned silently."""
    n = 40
    rng = np.random.default_rng(0)
    columns = {
        "amount": rng.normal(size=n),
        "Target": rng.integers(0, 2, n).astype(np.float64),
        "customer_id": rng.integers(0, 5, n).astype(np.float64),
        "order": np.array([f"o-{i}" for i in range(n)], dtype=object),
        "row_number": np.arange(10, 10 + 2 * n, 2).astype(np.int64),
        "channel": rng.choice(["web", "store"], n).astype(object),
        "count": rng.poisson(3, n).astype(np.float64),
    }
    assert suspicious_columns(columns) == {
        "Target": "named like a label",
        "customer_id": "named like an id",
        "order": "a different text value in every row (an id?)",
        "row_number": "integers changing by a fixed step each row (a row number?)",
    }
    few = {"order": np.array(["a", "b", "c"], dtype=object)}  # too few rows to call unique values an id
    assert suspicious_columns(few) == {}
