"""`vae-anomaly demo --kind sequence`: generated streams, a trained model, curls that the server answers."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
from fastapi.testclient import TestClient

from vae_anomaly.service.app import create_app
from vae_anomaly.service.settings import Settings
from vae_anomaly.training.cli import main
from vae_anomaly.training.sequence_demo import FAULTS, LABEL, SENSORS, make_sensor_stream


def test_generated_stream_labels_exactly_the_fault_rows():
    normal = make_sensor_stream(600, seed=0)
    assert list(normal.columns) == ["time", *SENSORS]
    test = make_sensor_stream(2000, seed=1, faults=True)
    expected = np.zeros(2000, dtype=int)
    for lo, hi in FAULTS.values():
        expected[lo:hi] = 1
    assert np.array_equal(test[LABEL].to_numpy(), expected)
    lo, hi = FAULTS["leak"]
    assert test["flow"].iloc[lo:hi].mean() < 0.8 * normal["flow"].mean()


def test_demo_trains_reports_and_prints_curls_the_server_answers(tmp_path: Path, capsys):
    assert main(["demo", "--kind", "sequence", "--dir", str(tmp_path), "--epochs", "3", "--no-serve"]) == 0
    printed = capsys.readouterr().out
    assert re.search(r"AUROC \d\.\d{3}", printed)
    bodies = re.findall(r"curl -s \S+/score .* -d @(\S+)", printed)
    assert len(bodies) == 2
    settings = Settings(model_dir=tmp_path / "models" / "sensors", device="cpu")
    with TestClient(create_app(settings)) as client:
        scores = []
        for path in bodies:
            content = Path(path).read_bytes()
            response = client.post("/score", content=content, headers={"content-type": "application/json"})
            assert response.status_code == 200, response.text
            (result,) = response.json()["results"]
            assert result["timestamp"] == json.loads(Path(path).read_text())["timestamps"][-1]
            scores.append(result["score"])
        normal, leak = scores
        assert leak > normal
        sample = client.post("/sample", json={"n": 2, "seed": 1})
        assert sample.status_code == 200 and set(sample.json()["samples"][0]) == set(SENSORS)
