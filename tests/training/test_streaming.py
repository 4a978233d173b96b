"""training.streaming: the streaming first pass equals the in-memory fit on data that fits (to
1e-12), rows are split by a hash of their row number (stable across chunkings), held-out parts are
capped, and a streamed training run gives a detector that separates anomalies."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from vae_anomaly.model.detector import Detector
from vae_anomaly.model.kinds.tabular.preprocessing import check_columns, fit_preprocessing
from vae_anomaly.model.kinds.tabular.schema import FeatureSpec, Schema, infer_schema
from vae_anomaly.training.cli import main
from vae_anomaly.training.data import DataError, frame_columns
from vae_anomaly.training.streaming import (
    CALIBRATION,
    TRAIN,
    VALIDATION,
    ReadOptions,
    fit_stream,
    held_out_fractions,
    row_split,
    scan,
)
from vae_anomaly.training.trainer import TrainConfig


@pytest.fixture(scope="module")
def table(tmp_path_factory: pytest.TempPathFactory) -> tuple[pd.DataFrame, object]:
    rng = np.random.default_rng(3)
    n = 1000
    a = rng.normal(10.0, 2.0, n)
    frame = pd.DataFrame(
        {
            "a": a,
            "b": 3.0 * a + rng.normal(0.0, 0.5, n),
            "items": rng.poisson(3.0, n) + 1,
            "color": np.where(a > 10.0, "red", rng.choice(["green", "blue", "teal"], n)),
            "flag": rng.random(n) < 0.3,
            "label": (rng.random(n) < 0.05).astype(int),
        }
    )
    frame.loc[rng.random(n) < 0.1, "a"] = np.nan
    frame.loc[rng.random(n) < 0.05, "color"] = None
    directory = tmp_path_factory.mktemp("stream")
    frame.to_parquet(directory / "t.parquet", row_group_size=128)
    frame.to_csv(directory / "t.csv", index=False)
    return frame, directory


@pytest.mark.parametrize(("name", "chunk_rows"), [("t.parquet", 37), ("t.parquet", 100_000), ("t.csv", 50)])
def test_first_pass_equals_the_in_memory_fit(table, name, chunk_rows):
    frame, directory = table
    options = ReadOptions(chunk_rows=chunk_rows, label_column="label", seed=5)
    found = scan(directory / name, options, None)

    normal = frame[frame["label"] == 0].drop(columns="label")
    rows = np.flatnonzero(frame["label"].to_numpy() == 0)
    columns = frame_columns(normal)
    schema = infer_schema(columns)
    assert found.schema == schema
    codes = options.split(rows)
    checked = check_columns(schema, columns)
    expected = fit_preprocessing(schema, {k: v[codes == TRAIN] for k, v in checked.items()})
    assert set(found.preprocessing.numeric) == set(expected.numeric) == {"a", "b", "items"}
    for feature, stats in expected.numeric.items():
        assert found.preprocessing.numeric[feature].center == pytest.approx(stats.center, rel=1e-12, abs=0)
        assert found.preprocessing.numeric[feature].scale == pytest.approx(stats.scale, rel=1e-12, abs=0)
    assert found.rows == {
        "train": int((codes == TRAIN).sum()),
        "validation": int((codes == VALIDATION).sum()),
        "calibration": int((codes == CALIBRATION).sum()),
    }
    np.testing.assert_array_equal(found.calibration["b"], checked["b"][codes == CALIBRATION])


def test_rows_are_split_by_a_hash_of_their_number():
    index = np.arange(200_000)
    codes = row_split(index, 0, 0.1, 0.2)
    assert abs((codes == CALIBRATION).mean() - 0.2) < 0.01 and abs((codes == VALIDATION).mean() - 0.1) < 0.01
    np.testing.assert_array_equal(row_split(index[5000:6000], 0, 0.1, 0.2), codes[5000:6000])  # any chunking
    assert (row_split(index, 1, 0.1, 0.2) != codes).mean() > 0.3  # the seed changes it


def test_held_out_parts_are_capped():
    config = TrainConfig()
    assert held_out_fractions(1000, config) == (0.1, 0.2)
    validation, calibration = held_out_fractions(10_000_000, config)
    assert validation == calibration == pytest.approx(0.01)  # 10⁵ of 10⁷ rows each


def test_an_id_like_column_is_refused(tmp_path):
    pd.DataFrame({"x": np.arange(10_050, dtype=float), "id": [f"u{i}" for i in range(10_050)]}).to_parquet(
        tmp_path / "ids.parquet"
    )
    with pytest.raises(DataError, match="'id' has more than 10000 distinct values"):
        scan(tmp_path / "ids.parquet", ReadOptions(chunk_rows=4096), None)


def test_schema_overrides_apply(table):
    _, directory = table
    overrides = Schema(features=[FeatureSpec(name="items", type="categorical")])
    found = scan(directory / "t.parquet", ReadOptions(label_column="label"), overrides)
    assert found.schema.features[2].type == "categorical" and "items" not in found.preprocessing.numeric


def test_streamed_training_detects_anomalies(table):
    frame, directory = table
    config = TrainConfig(epochs=15, hidden_dims=[16], latent_dim=2, device="cpu", thresholds={"warn": 0.05})
    result = fit_stream(
        directory / "t.parquet", config, ReadOptions(chunk_rows=200, label_column="label"), progress=False
    )
    detector = result.detector
    summary = result.summary
    assert summary["rows"]["train"] + summary["rows"]["validation"] + summary["rows"]["calibration"] == int(
        (frame["label"] == 0).sum()
    )
    assert len(detector.manifest.calibration_scores) == summary["rows"]["calibration"]
    # anomalies: b off the b ≈ 3a line
    probe = frame.drop(columns="label").head(200).copy()
    shifted = probe.copy()
    shifted["b"] = shifted["b"] + 12.0
    normal = detector.terms(detector.kind.columns_from_table(frame_columns(probe))).score
    anomalous = detector.terms(detector.kind.columns_from_table(frame_columns(shifted))).score
    assert np.mean(anomalous > np.nanmax(np.sort(normal)[:-5])) > 0.9


def test_cli_train_stream(table, tmp_path, capsys):
    _, directory = table
    out = tmp_path / "model"
    argv = ["train", str(directory / "t.csv"), "--stream", "--chunk-rows", "300", "--out", str(out)]
    assert main([*argv, "--label-column", "label", "--epochs", "2", "--quiet", "--latent-dim", "2"]) == 0
    assert "written to" in capsys.readouterr().out
    detector = Detector.load(out, "cpu")
    assert detector.manifest.training["world_size"] == 1
    assert [f.name for f in detector.kind.schema.features] == ["a", "b", "items", "color", "flag"]
