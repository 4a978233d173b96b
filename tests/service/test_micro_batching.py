"""Micro-batching: concurrent requests gathered into one pass get their own results, equal to the
unbatched ones within float round-off; a bad request fails alone; metrics count every record once;
the batcher stops with the app. Also the columnar body, which shares the scoring path."""

from __future__ import annotations

import asyncio
import re
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from fastapi.testclient import TestClient

from vae_anomaly.model.detector import Detector
from vae_anomaly.service.app import create_app
from vae_anomaly.service.batching import MicroBatcher
from vae_anomaly.service.errors import ApiError
from vae_anomaly.service.metrics import ServiceMetrics
from vae_anomaly.service.settings import Settings

GATHER_SECONDS = 0.5  # long enough that requests sent together land in one batch on a busy machine


def records(n: int, seed: int = 0) -> list[dict[str, object]]:
    rng = np.random.default_rng(seed)
    a = rng.normal(10, 2, n)
    return [
        {
            "a": float(x),
            "b": float(3 * x + rng.normal(0, 2)),
            "count": int(rng.poisson(3)),
            "color": "red",
            "flag": False,
        }
        for x in a
    ]


@pytest.fixture
def batched(settings: Settings):
    gathered = settings.model_copy(
        update={"micro_batch_max_wait_seconds": GATHER_SECONDS, "micro_batch_max_records": 64}
    )
    with TestClient(create_app(gathered)) as client:
        yield client


@pytest.fixture
def unbatched(settings: Settings):
    with TestClient(create_app(settings.model_copy(update={"micro_batch": False}))) as client:
        yield client


def post_together(client: TestClient, bodies: list[dict]) -> list:
    with ThreadPoolExecutor(len(bodies)) as pool:
        return list(pool.map(lambda body: client.post("/score", json=body), bodies))


def scored_records(client: TestClient) -> float:
    text = client.get("/metrics").text
    return float(re.search(r"^vae_anomaly_records_scored_total (\S+)$", text, re.M).group(1))


def test_concurrent_requests_share_a_batch_and_get_their_own_results(batched, unbatched):
    rows = records(12)
    bodies = [{"records": [row], "explain": i % 4} for i, row in enumerate(rows)]
    bodies[5] = {"records": rows[5:8], "explain": 2}  # a request of several records joins too
    responses = post_together(batched, bodies)
    batcher = batched.app.state.service.batcher
    assert batcher.records == sum(len(b["records"]) for b in bodies)
    assert batcher.batches < len(bodies)  # they were gathered
    for body, response in zip(bodies, responses, strict=True):
        assert response.status_code == 200, response.text
        alone = unbatched.post("/score", json=body).json()["results"]
        got = response.json()["results"]
        assert len(got) == len(body["records"])
        np.testing.assert_allclose([r["score"] for r in got], [r["score"] for r in alone], rtol=1e-5)
        assert [[t["feature"] for t in r["top_features"]] for r in got] == [
            [t["feature"] for t in r["top_features"]] for r in alone
        ]
        assert all(len(r["top_features"]) == body["explain"] for r in got)
    assert scored_records(batched) == batcher.records


def test_a_bad_request_in_a_gathered_batch_fails_alone(batched, unbatched):
    rows = records(6, seed=3)
    bodies = [{"records": [row]} for row in rows]
    bodies[2] = {"records": [{**rows[2], "a": "abc"}]}
    responses = post_together(batched, bodies)
    assert responses[2].status_code == 422
    assert responses[2].json()["detail"][0] == {
        "loc": ["body", "records", 0, "a"],
        "msg": "expected a number, got string 'abc'",
        "type": "float_type",
    }
    for i, response in enumerate(responses):
        if i != 2:
            assert response.status_code == 200, response.text
            alone = unbatched.post("/score", json=bodies[i]).json()["results"][0]["score"]
            np.testing.assert_allclose(response.json()["results"][0]["score"], alone, rtol=1e-5)
    assert scored_records(batched) == 5


def test_a_batch_whose_scoring_fails_is_scored_request_by_request(tiny_model_dir):
    """If the gathered pass fails, each request is retried alone: only the broken one fails."""
    detector = Detector.load(tiny_model_dir, "cpu")
    good = detector.kind.columns_from_records(records(3))
    broken = {name: values for name, values in detector.kind.columns_from_records(records(1)).items() if name != "b"}

    async def run() -> list:
        metrics = ServiceMetrics().bind_model(
            detector.thresholds.calibration, {"warn": 1.0}, "id", "v", "tabular", "cpu"
        )
        batcher = MicroBatcher(max_records=64, max_wait_seconds=GATHER_SECONDS)
        batcher.start()
        outcomes = await asyncio.gather(
            batcher.score(detector, metrics, good, 3),
            batcher.score(detector, metrics, broken, 3),
            return_exceptions=True,
        )
        await batcher.close()
        assert batcher.batches == 1
        return outcomes

    first, second = asyncio.run(run())
    assert len(first) == 3
    np.testing.assert_allclose([r["score"] for r in first], detector.score(good).terms.score, rtol=1e-5)
    assert isinstance(second, KeyError)


def test_the_batcher_stops_with_the_app(settings: Settings, normal_record):
    with TestClient(create_app(settings)) as client:
        assert client.post("/score", json={"records": [normal_record]}).status_code == 200
        batcher = client.app.state.service.batcher
        detector, metrics = client.app.state.service.loaded()
    assert batcher._task.done()

    async def late() -> None:
        await batcher.score(detector, metrics, detector.kind.columns_from_records([normal_record]), 3)

    with pytest.raises(ApiError, match="shutting down"):
        asyncio.run(late())


def test_scores_match_across_batch_positions(batched, normal_record, anomalous_record):
    """The anomalous record's score is the same wherever it sits in a gathered batch."""
    alone = batched.post("/score", json={"records": [anomalous_record]}).json()["results"][0]["score"]
    others = records(9, seed=5)
    for position in (0, 4, 9):
        bodies = [{"records": [row]} for row in others]
        bodies.insert(position, {"records": [anomalous_record]})
        responses = post_together(batched, bodies)
        np.testing.assert_allclose(responses[position].json()["results"][0]["score"], alone, rtol=1e-5)


# -- the columnar body ------------------------------------------------------------------------------


def test_columnar_body_scores_like_records(client, normal_record, anomalous_record):
    rows = [normal_record, anomalous_record]
    names = ["flag", "color", "count", "b", "a"]
    columnar = client.post("/score", json={"columns": names, "data": [[r[n] for n in names] for r in rows]})
    assert columnar.status_code == 200, columnar.text
    by_records = client.post("/score", json={"records": rows}).json()["results"]
    got = columnar.json()["results"]
    np.testing.assert_allclose([r["score"] for r in got], [r["score"] for r in by_records], rtol=1e-5)
    assert got[1]["top_features"][0]["feature"] == "b"
    reconstructed = client.post("/reconstruct", json={"columns": names, "data": [[r[n] for n in names] for r in rows]})
    assert reconstructed.status_code == 200 and len(reconstructed.json()["results"]) == 2


@pytest.mark.parametrize(
    ("body", "status", "loc", "msg"),
    [
        (
            {
                "columns": ["a", "b", "count", "color", "flag"],
                "data": [[10.0, 30.0, 3, "red", False], ["x", 1, 1, "red", True]],
            },
            422,
            ["body", "data", 1, "a"],
            "expected a number, got string 'x'",
        ),
        (
            {"columns": ["a", "b", "count", "color", "flag"], "data": [[None, 30.0, 3, "red", False]]},
            422,
            ["body", "data", 0, "a"],
            "feature is required and may not be null",
        ),
        (
            {"columns": ["a", "b", "count", "color"], "data": [[10.0, 30.0, 3, "red"]]},
            422,
            ["body", "columns", "flag"],
            "feature is absent; send null for a missing value",
        ),
        (
            {"columns": ["a", "b", "count", "color", "flag"], "data": [[10.0, 30.0, 3, "red"]]},
            422,
            ["body", "data", 0],
            "expected 5 values (one per column), got 4",
        ),
        ({"columns": ["a"], "data": [1.0]}, 422, ["body", "data", 0], "Input should be a valid list"),
        ({"columns": ["a"], "data": []}, 422, ["body", "data"], None),
        ({"columns": ["a"], "data": [[1]] * 51}, 413, ["body", "data"], None),
    ],
)
def test_columnar_body_errors_name_the_field(client, body, status, loc, msg):
    for route in ("/score", "/reconstruct"):
        response = client.post(route, json=body)
        assert response.status_code == status, response.text
        item = response.json()["detail"][0]
        assert item["loc"] == loc
        if msg is not None:
            assert item["msg"] == msg


def test_requests_on_different_models_are_never_batched_together(tiny_model_dir):
    """After a reload, requests still holding the old model form their own batch."""
    old, new = Detector.load(tiny_model_dir, "cpu"), Detector.load(tiny_model_dir, "cpu")
    columns = old.kind.columns_from_records(records(2))

    async def run() -> MicroBatcher:
        metrics = ServiceMetrics().bind_model(old.thresholds.calibration, {"warn": 1.0}, "id", "v", "tabular", "cpu")
        batcher = MicroBatcher(max_records=64, max_wait_seconds=GATHER_SECONDS)
        batcher.start()
        await asyncio.gather(
            batcher.score(old, metrics, columns, 3),
            batcher.score(new, metrics, columns, 3),
            batcher.score(old, metrics, columns, 3),
        )
        await batcher.close()
        return batcher

    assert asyncio.run(run()).batches >= 2
