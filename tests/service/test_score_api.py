"""The /score, /reconstruct and /sample contract against a real app on a tiny trained model."""

from __future__ import annotations

import numpy as np
import pytest
from fastapi.testclient import TestClient

from tests.conftest import SCORE_RESULT_FIELDS


def score(client: TestClient, records: list, **extra) -> dict:
    response = client.post("/score", json={"records": records, **extra})
    assert response.status_code == 200, response.text
    return response.json()


def test_score_returns_every_field_in_input_order(client, normal_record, anomalous_record):
    body = score(client, [normal_record, anomalous_record])
    assert set(body["model"]) == {"id", "version"}
    assert body["model"]["version"] == "test-1"
    first, second = body["results"]
    assert set(first) == set(SCORE_RESULT_FIELDS)
    assert second["score"] > first["score"]
    assert second["is_anomaly"] and not first["is_anomaly"]
    assert "warn" in second["thresholds_exceeded"]
    assert 0 < second["p_value"] < first["p_value"] <= 1
    assert first["elbo"] == pytest.approx(-first["score"])
    assert sum(1 for _ in first["top_features"]) == 3
    top = second["top_features"][0]
    assert set(top) == {"feature", "contribution", "value", "expected"}
    assert top["feature"] == "b" and top["value"] == -45.0
    assert top["expected"] > -45.0 + 20  # the reconstruction at the posterior mean is pulled back toward normal


def test_scores_do_not_depend_on_batch_or_position(client, normal_record, anomalous_record):
    alone = score(client, [anomalous_record])["results"][0]["score"]
    rng = np.random.default_rng(1)
    others = [{**normal_record, "a": float(a), "b": float(3 * a + rng.normal(0, 0.5))} for a in rng.normal(10, 2, 40)]
    for position in (0, 17, 40):
        batch = [*others[:position], anomalous_record, *others[position:]]
        in_batch = score(client, batch)["results"][position]["score"]
        np.testing.assert_allclose(in_batch, alone, rtol=1e-5)
    np.testing.assert_allclose(score(client, [anomalous_record])["results"][0]["score"], alone, rtol=1e-5)


def test_missing_values_are_listed_and_scored(client, normal_record):
    result = score(client, [{**normal_record, "b": None, "color": None}])["results"][0]
    assert result["missing"] == ["b", "color"]
    assert all(item["feature"] not in ("b", "color") for item in result["top_features"])


def test_unseen_category_is_scored_as_very_unlikely(client, normal_record):
    seen, unseen = score(client, [normal_record, {**normal_record, "color": "purple"}])["results"]
    assert unseen["score"] > seen["score"] + 10
    assert unseen["top_features"][0]["feature"] == "color"
    assert unseen["top_features"][0]["value"] == "purple"


def test_explain_sets_the_number_of_top_features(client, normal_record):
    assert len(score(client, [normal_record], explain=5)["results"][0]["top_features"]) == 5
    assert score(client, [normal_record], explain=0)["results"][0]["top_features"] == []


def test_reconstruct_imputes_missing_features(client, normal_record):
    response = client.post("/reconstruct", json={"records": [{**normal_record, "b": None}]})
    assert response.status_code == 200, response.text
    result = response.json()["results"][0]
    assert result["imputed"] == ["b"]
    assert set(result["reconstruction"]) == set(normal_record)
    assert result["reconstruction"]["b"] == pytest.approx(30.0, abs=4.0)  # b ≈ 3a
    assert result["feature_errors"]["b"] is None
    assert isinstance(result["feature_errors"]["a"], float)
    assert isinstance(result["reconstruction"]["count"], int)


def same_samples(first: list[dict], second: list[dict]) -> bool:
    """Equal records; numbers within float32 round-off, since requests run on threadpool threads whose
    intra-op thread counts (and so matmul summation orders) may differ."""
    return len(first) == len(second) and all(
        a.keys() == b.keys()
        and all(b[k] == pytest.approx(v, rel=1e-6) if isinstance(v, float) else b[k] == v for k, v in a.items())
        for a, b in zip(first, second, strict=True)
    )


def test_sample_is_repeatable_with_a_seed(client):
    first = client.post("/sample", json={"n": 5, "seed": 7}).json()
    again = client.post("/sample", json={"n": 5, "seed": 7}).json()
    other = client.post("/sample", json={"n": 5, "seed": 8}).json()
    assert same_samples(first["samples"], again["samples"])
    assert not same_samples(first["samples"], other["samples"])
    assert len(first["samples"]) == 5
    record = first["samples"][0]
    assert set(record) == {"a", "b", "count", "color", "flag"}
    assert record["color"] in {"red", "green", "blue"}
    assert isinstance(record["flag"], bool)


def test_samples_follow_the_training_distribution(client):
    samples = client.post("/sample", json={"n": 100, "seed": 0}).json()["samples"]
    a = np.array([s["a"] for s in samples])
    b = np.array([s["b"] for s in samples])
    assert abs(a.mean() - 10) < 1.5
    assert np.corrcoef(a, b)[0, 1] > 0.7


def test_sample_without_seed_reports_the_seed_used(client):
    body = client.post("/sample", json={"n": 2}).json()
    again = client.post("/sample", json={"n": 2, "seed": body["seed"]}).json()
    assert same_samples(again["samples"], body["samples"])
