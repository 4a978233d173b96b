"""training.batch_scoring: `score_frame` is the one scoring path on a DataFrame; `score --out
.parquet` streams record batches; `--engine dask` on a LocalCluster of 2 workers gives the same
scores as one process, bit for bit."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from vae_anomaly.model.detector import Detector
from vae_anomaly.training.batch_scoring import OUTPUT_COLUMNS, score_file_streaming, score_frame
from vae_anomaly.training.cli import main
from vae_anomaly.training.data import DataError, read_table


@pytest.fixture(scope="module")
def model(labelled_csv: Path, tmp_path_factory: pytest.TempPathFactory, fit_tiny) -> tuple[Path, Detector]:
    table = read_table(labelled_csv, "label")
    keep = np.flatnonzero(table.labels == 0)
    result = fit_tiny(table.take(keep), epochs=3)
    directory = tmp_path_factory.mktemp("batch") / "model"
    result.detector.save(directory)
    return directory, Detector.load(directory, "cpu")


@pytest.fixture(scope="module")
def parquet(labelled_csv: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("batch-data") / "rows.parquet"
    pd.read_csv(labelled_csv).to_parquet(path, row_group_size=70)
    return path


def test_score_frame_is_the_scoring_path(model, labelled_csv):
    _, detector = model
    frame = pd.read_csv(labelled_csv)
    scored = score_frame(detector, frame, explain=2)
    assert list(scored.columns) == list(OUTPUT_COLUMNS) and scored.index.equals(frame.index)
    table = read_table(labelled_csv, "label", schema=detector.kind.schema)
    expected = detector.score_results(detector.kind.columns_from_table(table.columns), explain=2)
    assert scored["score"].tolist() == [r["score"] for r in expected]
    assert scored["p_value"].tolist() == [r["p_value"] for r in expected]
    assert scored["is_anomaly"].tolist() == [r["is_anomaly"] for r in expected]
    assert score_frame(detector, frame.iloc[:0]).shape == (0, len(OUTPUT_COLUMNS))


def test_score_frame_names_an_absent_column(model, labelled_csv):
    _, detector = model
    with pytest.raises(DataError, match="columns absent from the data: color"):
        score_frame(detector, pd.read_csv(labelled_csv).drop(columns="color"))


def _by_row_group(detector: Detector, parquet: Path) -> pd.DataFrame:
    """The reference: `score_frame` on each 70-row row group, in one process. Scores depend on
    the batch a row is scored in only in the last float32 bits; equal batches give equal bits."""
    frame = pd.read_parquet(parquet)
    parts = [score_frame(detector, frame.iloc[start : start + 70]) for start in range(0, len(frame), 70)]
    return pd.concat(parts).reset_index(drop=True)


def test_streaming_score_matches_one_process(model, parquet, tmp_path):
    directory, detector = model
    reference = _by_row_group(detector, parquet)
    out = tmp_path / "scores.parquet"
    assert main(["score", str(directory), str(parquet), "--out", str(out), "--device", "cpu"]) == 0
    pd.testing.assert_frame_equal(pd.read_parquet(out), reference, check_exact=True)
    whole = score_frame(detector, pd.read_parquet(parquet))  # all rows in one batch: to float32 precision
    np.testing.assert_allclose(reference["score"], whole["score"], rtol=1e-6)
    for suffix in (".csv", ".jsonl"):
        path = tmp_path / f"scores{suffix}"
        assert score_file_streaming(detector, parquet, path, batch_rows=50) == len(whole)
        frame = pd.read_csv(path) if suffix == ".csv" else pd.read_json(path, lines=True)
        np.testing.assert_allclose(frame["score"].to_numpy(), whole["score"].to_numpy(), rtol=1e-6)


def test_dask_scores_equal_one_process(model, parquet, tmp_path):
    pytest.importorskip("dask.dataframe")
    pytest.importorskip("distributed")
    from vae_anomaly.training.batch_scoring import score_file_dask

    directory, detector = model
    out = tmp_path / "dask-out"
    rows = score_file_dask(directory, parquet, out, workers=2, processes=False)
    reference = _by_row_group(detector, parquet)
    assert rows == len(reference) == 330
    parts = sorted(out.glob("*.parquet"), key=lambda p: int(p.stem.split(".")[-1]))
    assert len(parts) == 5  # one per partition: one per row group
    scored = pd.concat([pd.read_parquet(p) for p in parts], ignore_index=True)
    pd.testing.assert_frame_equal(scored, reference, check_exact=True)  # bit for bit
