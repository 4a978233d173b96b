"""The notebook API (`vae_anomaly.Detector`): fit on a DataFrame, score one, save, load (issue 14 item 15)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from tests.conftest import one_thread
from vae_anomaly import Detector
from vae_anomaly.model.detector import Detector as LoadedDetector
from vae_anomaly.training.data import DataError


@pytest.fixture(scope="module")
def frame(labelled_csv: Path) -> pd.DataFrame:
    data = pd.read_csv(labelled_csv)
    data.insert(0, "order_id", [f"o{i}" for i in range(len(data))])
    return data


@pytest.fixture(scope="module")
def fitted(frame: pd.DataFrame) -> Detector:
    with one_thread():
        return Detector.fit(
            frame,
            label_column="label",
            drop_columns=["order_id"],
            thresholds={"warn": 0.05, "critical": 0.02},
            epochs=30,
            device="cpu",
            seed=0,
        )


def test_fit_uses_normal_rows_and_leaves_label_and_dropped_columns_out(fitted: Detector):
    assert fitted.features == ["a", "b", "items", "color", "flag"]
    assert set(fitted.thresholds) == {"warn", "critical"} and fitted.active_threshold == "warn"
    assert fitted.loaded.manifest.training["rows"]["train"] == 210  # 70% of the 300 normal rows


def test_score_returns_one_row_per_input_with_ids_and_separates_anomalies(fitted: Detector, frame: pd.DataFrame):
    scored = fitted.score(frame, id_column="order_id")
    assert list(scored.index) == list(frame.index)
    assert scored["id"].tolist() == frame["order_id"].tolist()
    assert {"score", "p_value", "is_anomaly", "top_features"} <= set(scored.columns)
    assert roc_auc_score(frame["label"], scored["score"]) > 0.9


def test_save_and_load_give_the_same_scores_and_the_cli_can_load_it(fitted: Detector, frame, tmp_path: Path):
    model_id = fitted.save(tmp_path / "m")
    loaded = Detector.load(tmp_path / "m", device="cpu")
    assert loaded.model_id == model_id == LoadedDetector.load(tmp_path / "m", "cpu").manifest.model_id
    np.testing.assert_allclose(loaded.score(frame)["score"], fitted.score(frame)["score"], rtol=1e-6)


def test_unknown_columns_are_named(frame: pd.DataFrame):
    with pytest.raises(DataError, match="columns not in the frame: nope"):
        Detector.fit(frame, drop_columns=["nope"])
