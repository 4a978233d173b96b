"""A tiny sequence model: train → score → serve (/score, /reconstruct, /sample, 422s) → reload."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from vae_anomaly.model.detector import load_detector
from vae_anomaly.service.app import create_app
from vae_anomaly.service.settings import Settings
from vae_anomaly.training.sequence import fit_sequence_detector, sequence_train_config

WINDOW = 8
SENSORS = ["pressure", "flow"]


def stream(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    return np.stack([np.sin(t / 4) + 0.05 * rng.normal(size=n), 2 * np.cos(t / 4) + 0.05 * rng.normal(size=n)], 1)


@pytest.fixture(scope="module")
def sequence_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    config = sequence_train_config(epochs=3, window=WINDOW, device="cpu", score_samples=4)
    result = fit_sequence_detector(stream(400), SENSORS, config, progress=False)
    directory = tmp_path_factory.mktemp("sequence") / "model"
    result.detector.save(directory)
    return directory


@pytest.fixture()
def client(sequence_model_dir: Path):
    settings = Settings(model_dir=sequence_model_dir, device="cpu", max_batch=50, max_samples=10)
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def body(rows: np.ndarray, **extra: object) -> dict[str, object]:
    return {"series": {"columns": SENSORS, "data": rows.tolist()}, **extra}


def test_score_returns_a_result_per_row_closing_a_window_and_matches_the_reloaded_model(client, sequence_model_dir):
    rows = stream(20, seed=1)
    response = client.post("/score", json=body(rows, timestamps=list(range(20))))
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [r["row"] for r in results] == list(range(WINDOW - 1, 20))
    assert [r["timestamp"] for r in results] == list(range(WINDOW - 1, 20))
    assert {s["sensor"] for s in results[0]["top_sensors"]} <= set(SENSORS)
    detector = load_detector(sequence_model_dir, "cpu")
    direct = detector.score_results(detector.kind.inputs_from_rows(rows))
    assert [r["score"] for r in results] == pytest.approx([r["score"] for r in direct])
    # Columns in another order are the same series.
    swapped = {"series": {"columns": SENSORS[::-1], "data": rows[:, ::-1].tolist()}}
    again = client.post("/score", json=swapped).json()["results"]
    assert [r["score"] for r in again] == pytest.approx([r["score"] for r in results])


@pytest.mark.parametrize(
    ("payload", "loc", "fragment"),
    [
        (body(stream(WINDOW - 1)), ["body", "series", "data"], "at least 8"),
        (body(stream(10), timestamps=[0, 1, 2, 3, 5, 4, 6, 7, 8, 9]), ["body", "timestamps", 5], "oldest first"),
        ({"series": {"columns": ["pressure", "speed"], "data": [[0, 0]] * 10}}, ["body", "series", "columns"], "speed"),
        ({"series": {"columns": ["pressure"], "data": [[0]] * 10}}, ["body", "series", "columns"], "'flow' is missing"),
        (
            {"series": {"columns": ["pressure", "flow", "flow"], "data": [[0, 0, 0]] * 10}},
            ["body", "series", "columns"],
            "appears twice",
        ),
        (
            {"series": {"columns": SENSORS, "data": [[0, 0]] * 5 + [[0]] + [[0, 0]] * 4}},
            ["body", "series", "data", 5],
            "1 values for 2 columns",
        ),
        (body(stream(10), timestamps=list(range(9))), ["body", "timestamps"], "9 timestamps for 10 rows"),
    ],
)
def test_bad_series_get_a_422_naming_the_field(client, payload, loc, fragment):
    response = client.post("/score", json=payload)
    assert response.status_code == 422, response.text
    detail = response.json()["detail"][0]
    assert detail["loc"] == loc and fragment in detail["msg"]


def test_reconstruct_and_sample_windows(client):
    response = client.post("/reconstruct", json=body(stream(WINDOW)))
    assert response.status_code == 200, response.text
    result = response.json()["results"][0]
    assert len(result["reconstruction"]["flow"]) == WINDOW
    samples = client.post("/sample", json={"n": 2, "seed": 1})
    assert samples.status_code == 200, samples.text
    assert len(samples.json()["samples"][0]["pressure"]) == WINDOW


def test_metrics_count_scored_rows_not_requests(client):
    """20 rows with a window of 8: 13 rows close a window, so 13 records scored, one request."""
    from tests.service.test_admin_and_metrics import samples, value

    rows = stream(20, seed=2)
    rows[15:, 0] += 30.0  # the last rows break the pressure cycle: their windows exceed the thresholds
    results = client.post("/score", json=body(rows)).json()["results"]
    client.post("/score", json=body(stream(WINDOW - 1)))  # a 422 scores nothing
    metrics = samples(client)
    assert value(metrics, "vae_anomaly_records_scored_total") == len(results) == 20 - WINDOW + 1
    assert value(metrics, "vae_anomaly_score_count") == 13
    assert value(metrics, "vae_anomaly_window_records") == 13
    for name in ("warn", "critical"):
        exceeded = sum(name in r["thresholds_exceeded"] for r in results)
        assert exceeded >= 5
        assert value(metrics, "vae_anomaly_anomalies_total", threshold=name) == exceeded
    assert value(metrics, "vae_anomaly_requests_total", endpoint="/score", status="200") == 1


def test_a_server_reloads_into_the_sequence_model_and_scores_series(tiny_model_dir, sequence_model_dir):
    """Serve a tabular model, `POST /admin/reload` the sequence artifact: /score then takes series
    and answers what the artifact loaded from disk answers; a records body is refused by name."""
    from tests.conftest import API_TOKEN

    settings = Settings(model_dir=tiny_model_dir, device="cpu", api_token=API_TOKEN, max_batch=50, max_samples=10)
    auth = {"Authorization": f"Bearer {API_TOKEN}"}
    rows = stream(12, seed=5)
    with TestClient(create_app(settings)) as test_client:
        assert test_client.post("/score", json=body(rows)).status_code == 422  # the tabular model takes records
        reload = test_client.post("/admin/reload", json={"model_dir": str(sequence_model_dir)}, headers=auth)
        assert reload.status_code == 200, reload.text
        assert reload.json()["schema_changed"] is True
        response = test_client.post("/score", json=body(rows))
        assert response.status_code == 200, response.text
        results = response.json()["results"]
        refused = test_client.post("/score", json={"records": [{"pressure": 0.0, "flow": 1.0}]})
    detector = load_detector(sequence_model_dir, "cpu")
    direct = detector.score_results(detector.kind.inputs_from_rows(rows))
    assert [r["row"] for r in results] == list(range(WINDOW - 1, 12))
    assert [r["score"] for r in results] == pytest.approx([r["score"] for r in direct])
    assert refused.status_code == 422 and "series" in refused.text


def test_the_v2_routes_answer_that_they_map_tables_only(client):
    """A sequence model has no tensor mapping on the KServe V2 routes: the protocol's error says so."""
    tensor = {"name": "series", "shape": [1, WINDOW, 2], "datatype": "FP64", "data": [0.0] * (WINDOW * 2)}
    response = client.post("/v2/models/vae-anomaly/infer", json={"inputs": [tensor]})
    assert response.status_code == 400
    assert response.json() == {
        "error": "the V2 protocol here maps one tensor per feature of a table; this model is a sequence model: "
        "send 'series' ({'columns': [...], 'data': [[...], ...]}) (use /score)"
    }
