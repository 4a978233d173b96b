"""`vae-anomaly train --time-column` (kind inferred) and `score`: one output row per input row."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from vae_anomaly.training.cli import main


def write_stream(path: Path, n: int = 300, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    frame = pd.DataFrame(
        {
            "time": pd.date_range("2024-01-01", periods=n, freq="s").astype(str),
            "pressure": np.sin(t / 4) + 0.05 * rng.normal(size=n),
            "flow": 2 * np.cos(t / 4) + 0.05 * rng.normal(size=n),
        }
    )
    frame.to_csv(path, sep=";", index=False)
    return frame


def test_train_then_score_every_row_in_file_order(tmp_path: Path, capsys):
    data = tmp_path / "stream.csv"
    write_stream(data)
    model = tmp_path / "model"
    argv = ["train", str(data), "--out", str(model), "--time-column", "time", "--window", "8", "--epochs", "2"]
    assert main([*argv, "--quiet", "--device", "cpu"]) == 0
    manifest = json.loads((model / "manifest.json").read_text())
    assert manifest["kind"] == "sequence" and manifest["kind_config"]["network"]["window"] == 8
    # Scoring a shuffled file: results come back in the file's order, one per row.
    frame = pd.read_csv(data, sep=";").iloc[:40].sample(frac=1.0, random_state=0)
    shuffled = tmp_path / "shuffled.csv"
    frame.to_csv(shuffled, index=False)
    out = tmp_path / "scores.jsonl"
    assert main(["score", str(model), str(shuffled), "--out", str(out), "--device", "cpu"]) == 0
    results = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(results) == 40
    time_rank = frame["time"].rank(method="first").astype(int).to_numpy() - 1  # position in time order
    for result, rank in zip(results, time_rank, strict=True):
        assert (result["score"] is None) == (rank < 7)
        if result["score"] is not None:
            assert {s["sensor"] for s in result["top_sensors"]} == {"pressure", "flow"}
    csv_out = tmp_path / "scores.csv"
    assert main(["score", str(model), str(shuffled), "--out", str(csv_out), "--device", "cpu"]) == 0
    table = pd.read_csv(csv_out)
    assert len(table) == 40 and table["score"].isna().sum() == 7
    assert list(table.columns[:4]) == ["row", "score", "p_value", "is_anomaly"]


def test_train_and_score_ready_made_windows_from_npz(tmp_path: Path):
    rng = np.random.default_rng(0)
    t = np.arange(12)[None, :, None] + rng.integers(0, 50, size=(120, 1, 1))  # (120, T=12, 1) window phases
    windows = np.concatenate([np.sin(t / 3), np.cos(t / 3)], axis=2) + 0.05 * rng.normal(size=(120, 12, 2))
    data = tmp_path / "windows.npz"
    np.savez(data, X=windows, sensors=np.array(["pressure", "flow"]))
    model = tmp_path / "model"
    argv = ["train", str(data), "--kind", "sequence", "--out", str(model), "--epochs", "2", "--quiet"]
    assert main([*argv, "--device", "cpu"]) == 0
    manifest = json.loads((model / "manifest.json").read_text())
    assert manifest["kind_config"]["network"]["window"] == 12
    assert manifest["kind_config"]["scaling"]["sensors"] == ["pressure", "flow"]
    # Scoring: one result per window, in the file's order; a sensor order swap is undone by name.
    test = tmp_path / "test.npz"
    broken = windows[:5].copy()
    broken[2, 6:, 0] += 4.0
    np.savez(test, X=broken[:, :, ::-1], sensors=np.array(["flow", "pressure"]))
    out = tmp_path / "scores.jsonl"
    assert main(["score", str(model), str(test), "--out", str(out), "--device", "cpu"]) == 0
    results = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["row"] for r in results] == [0, 1, 2, 3, 4]
    scores = [r["score"] for r in results]
    assert int(np.argmax(scores)) == 2 and results[2]["top_sensors"][0]["sensor"] == "pressure"
    # A --window that contradicts the file's windows, and windows of another length, are refused.
    assert main([*argv, "--window", "8", "--device", "cpu"]) == 2
    np.savez(test, X=windows[:3, :8], sensors=np.array(["pressure", "flow"]))
    assert main(["score", str(model), str(test), "--device", "cpu"]) == 2


def test_level_likelihood_and_calibration_flags_reach_the_manifest(tmp_path: Path):
    data = tmp_path / "stream.csv"
    write_stream(data)
    model = tmp_path / "model"
    argv = ["train", str(data), "--out", str(model), "--time-column", "time", "--window", "8", "--epochs", "1"]
    flags = ["--level", "relative", "--sensor-likelihood", "gaussian", "--calibration", "held_out"]
    assert main([*argv, *flags, "--quiet", "--device", "cpu"]) == 0
    kind_config = json.loads((model / "manifest.json").read_text())["kind_config"]
    assert kind_config["relative_sensors"] == ["pressure", "flow"] and kind_config["sensor_dof"] is None
    assert kind_config["calibration"] == "held_out"
    assert main([*argv, "--quiet", "--device", "cpu"]) == 0  # defaults: auto (nothing drifts here), Student-t
    kind_config = json.loads((model / "manifest.json").read_text())["kind_config"]
    assert kind_config["relative_sensors"] == [] and kind_config["sensor_dof"] == 4
    assert kind_config["calibration"] == "cross_fit" and kind_config["calibration_folds"] == 5


def test_family_ae_trains_and_scores_a_stream_and_cvae_is_refused(tmp_path: Path, capsys):
    data = tmp_path / "stream.csv"
    write_stream(data)
    model = tmp_path / "model"
    argv = ["train", str(data), "--out", str(model), "--time-column", "time", "--window", "8", "--epochs", "1"]
    assert main([*argv, "--family", "ae", "--quiet", "--device", "cpu"]) == 0
    manifest = json.loads((model / "manifest.json").read_text())
    assert manifest["family"] == "ae" and manifest["kind"] == "sequence"
    out = tmp_path / "scores.jsonl"
    assert main(["score", str(model), str(data), "--out", str(out), "--device", "cpu"]) == 0
    results = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(results) == 300 and sum(r["score"] is None for r in results) == 7
    assert all(np.isfinite(r["score"]) for r in results[7:])
    capsys.readouterr()
    assert main([*argv, "--family", "cvae", "--quiet", "--device", "cpu", "--out", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: family 'cvae' models x given a condition, and this sequence model has none")
    assert "Traceback" not in err and not (tmp_path / "c").exists()


def test_evaluate_refuses_a_sequence_model_with_a_message(tmp_path: Path, capsys):
    """It used to fall into the tabular path and end in an AssertionError traceback."""
    data = tmp_path / "stream.csv"
    write_stream(data, n=120)
    model = tmp_path / "model"
    argv = ["train", str(data), "--out", str(model), "--time-column", "time", "--window", "8", "--epochs", "1"]
    assert main([*argv, "--quiet", "--device", "cpu"]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(model), str(data), "--label-column", "flow", "--device", "cpu"]) == 2
    assert "evaluate takes tabular and image models" in capsys.readouterr().err


def test_series_column_windows_stay_in_their_series_and_each_series_starts_unscored(tmp_path: Path):
    """Two machines interleaved in one file: each machine's first window - 1 rows get null, every
    other row is the score of a window of its own machine alone (the same as scoring that machine's
    rows by themselves)."""
    a, b = write_stream(tmp_path / "a.csv", n=200, seed=1), write_stream(tmp_path / "b.csv", n=200, seed=2)
    a["machine"], b["machine"] = "a", "b"
    b["flow"] += 5.0  # machine b runs at another level: a window mixing the two would score far off
    both = pd.concat([a, b]).sort_values("time", kind="stable").reset_index(drop=True)
    data = tmp_path / "both.csv"
    both.to_csv(data, index=False)
    model = tmp_path / "model"
    argv = ["train", str(data), "--out", str(model), "--time-column", "time", "--series-column", "machine"]
    assert (
        main([*argv, "--window", "8", "--epochs", "2", "--calibration", "held_out", "--quiet", "--device", "cpu"]) == 0
    )
    test = both.iloc[:60]  # 30 rows of each machine, interleaved
    test_path = tmp_path / "test.csv"
    test.to_csv(test_path, index=False)
    out = tmp_path / "scores.jsonl"
    assert main(["score", str(model), str(test_path), "--out", str(out), "--device", "cpu"]) == 0
    results = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(results) == 60
    for machine in ("a", "b"):
        rows = np.flatnonzero(test["machine"].to_numpy() == machine)
        scores = [results[i]["score"] for i in rows]
        assert all(s is None for s in scores[:7]) and all(s is not None for s in scores[7:])
        alone = tmp_path / f"{machine}_alone.csv"
        test.iloc[rows].to_csv(alone, index=False)
        out_alone = tmp_path / f"{machine}.jsonl"
        assert main(["score", str(model), str(alone), "--out", str(out_alone), "--device", "cpu"]) == 0
        own = [json.loads(line)["score"] for line in out_alone.read_text().splitlines()]
        assert scores[7:] == pytest.approx(own[7:])
