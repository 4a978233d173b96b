"""Thresholds admin (auth included), metadata and health routes, and metrics moving by exactly the
right amounts."""

from __future__ import annotations

import numpy as np
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import API_TOKEN
from vae_anomaly.model.errors import ArtifactError
from vae_anomaly.service.app import create_app
from vae_anomaly.service.settings import Settings

AUTH = {"Authorization": f"Bearer {API_TOKEN}"}


def samples(client: TestClient) -> dict[tuple[str, tuple], float]:
    response = client.get("/metrics")
    assert response.status_code == 200
    out = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def value(metrics: dict, metric: str, **labels) -> float:
    return metrics.get((metric, tuple(sorted(labels.items()))), 0.0)


def test_get_thresholds(client):
    body = client.get("/thresholds").json()
    assert body["active"] == "warn"
    assert set(body["thresholds"]) == {"warn", "critical"}
    assert body["thresholds"]["warn"]["target_fpr"] == 0.01
    assert body["thresholds"]["critical"]["value"] >= body["thresholds"]["warn"]["value"]


def test_admin_needs_a_bearer_token(client):
    assert client.put("/thresholds/warn", json={"value": 1.0}).status_code == 401
    response = client.put("/thresholds/warn", json={"value": 1.0}, headers={"Authorization": "Bearer nope"})
    assert response.status_code == 403
    response = client.put("/active-threshold", json={"name": "critical"}, headers={"Authorization": "Basic abc"})
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert client.get("/thresholds").json()["thresholds"]["warn"]["value"] != 1.0


def test_admin_disabled_without_configured_token(tiny_model_dir):
    settings = Settings(model_dir=tiny_model_dir, device="cpu", api_token=None)
    with TestClient(create_app(settings)) as client:
        response = client.put("/active-threshold", json={"name": "critical"}, headers=AUTH)
        assert response.status_code == 403
        assert "VAE_ANOMALY_API_TOKEN" in response.json()["detail"][0]["msg"]


def test_put_threshold_by_value_and_by_target(client, normal_record):
    response = client.put("/thresholds/pager", json={"value": -1000.0}, headers=AUTH)
    assert response.status_code == 200
    assert response.json()["thresholds"]["pager"] == {"value": -1000.0, "target_fpr": None}
    result = client.post("/score", json={"records": [normal_record]}).json()["results"][0]
    assert "pager" in result["thresholds_exceeded"]
    loose = client.put("/thresholds/loose", json={"target_fpr": 0.2}, headers=AUTH).json()["thresholds"]["loose"]
    assert loose["target_fpr"] == 0.2
    assert loose["value"] < client.get("/thresholds").json()["thresholds"]["warn"]["value"]
    again = client.put("/thresholds/loose", json={"target_fpr": 0.2}, headers=AUTH).json()
    assert again.pop("applies_to") == "this worker only"  # no VAE_ANOMALY_THRESHOLDS_FILE
    assert client.get("/thresholds").json() == again


@pytest.mark.parametrize(
    ("name", "body"),
    [
        ("Bad Name", {"value": 1.0}),
        ("ok", {"value": 1.0, "target_fpr": 0.1}),
        ("ok", {}),
        ("ok", {"target_fpr": 1.5}),
        ("ok", {"value": "high"}),
    ],
)
def test_put_threshold_rejects_bad_input(client, name, body):
    response = client.put(f"/thresholds/{name}", json=body, headers=AUTH)
    assert response.status_code == 422, response.text


def test_switch_active_threshold(client, anomalous_record):
    client.put("/thresholds/never", json={"value": 1e9}, headers=AUTH)
    assert client.post("/score", json={"records": [anomalous_record]}).json()["results"][0]["is_anomaly"]
    response = client.put("/active-threshold", json={"name": "never"}, headers=AUTH)
    assert response.status_code == 200 and response.json()["active"] == "never"
    assert not client.post("/score", json={"records": [anomalous_record]}).json()["results"][0]["is_anomaly"]
    missing = client.put("/active-threshold", json={"name": "nosuch"}, headers=AUTH)
    assert missing.status_code == 404
    assert "nosuch" in missing.json()["detail"][0]["msg"]


def test_model_health_and_readiness(client):
    model = client.get("/model").json()
    assert model["device"] == "cpu"
    assert model["version"] == "test-1"
    assert [f["name"] for f in model["schema"]["features"]] == ["a", "b", "count", "color", "flag"]
    assert model["schema"]["features"][0]["required"] is True
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").status_code == 200


def test_broken_artifact_refuses_to_start(tiny_model_dir, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "manifest.json").write_text((tiny_model_dir / "manifest.json").read_text())
    (broken / "weights.safetensors").write_bytes((tiny_model_dir / "weights.safetensors").read_bytes()[:-10])
    with (
        pytest.raises(ArtifactError, match=r"weights\.safetensors"),
        TestClient(create_app(Settings(model_dir=broken))),
    ):
        pass


def test_counters_move_by_exactly_the_right_amounts(client, normal_record, anomalous_record):
    before = samples(client)
    assert value(before, "vae_anomaly_records_scored_total") == 0  # warm-up is not counted
    assert value(before, "vae_anomaly_anomalies_total", threshold="warn") == 0
    assert ("vae_anomaly_anomalies_total", (("threshold", "critical"),)) in before  # pre-created at 0
    results = client.post("/score", json={"records": [normal_record, anomalous_record, anomalous_record]}).json()
    client.post("/reconstruct", json={"records": [anomalous_record]})
    client.post("/score", json={"records": []})
    after = samples(client)
    assert value(after, "vae_anomaly_records_scored_total") == 3
    for name in ("warn", "critical"):
        exceeded = sum(name in r["thresholds_exceeded"] for r in results["results"])
        assert value(after, "vae_anomaly_anomalies_total", threshold=name) == exceeded
    assert value(after, "vae_anomaly_anomalies_total", threshold="warn") == 2
    assert value(after, "vae_anomaly_requests_total", endpoint="/score", status="200") == 1
    assert value(after, "vae_anomaly_requests_total", endpoint="/score", status="422") == 1
    assert value(after, "vae_anomaly_requests_total", endpoint="/reconstruct", status="200") == 1
    assert value(after, "vae_anomaly_request_duration_seconds_count", endpoint="/score") == 2
    assert value(after, "vae_anomaly_score_count") == 3
    model = client.get("/model").json()
    info = {"model_id": model["id"], "version": "test-1", "kind": "tabular", "device": "cpu"}
    assert value(after, "vae_anomaly_model_info", **info) == 1
    warn = client.get("/thresholds").json()["thresholds"]["warn"]["value"]
    assert value(after, "vae_anomaly_threshold", name="warn") == pytest.approx(warn)


def test_threshold_gauge_and_counter_follow_updates(client, anomalous_record):
    client.put("/thresholds/pager", json={"value": 5.5}, headers=AUTH)
    metrics = samples(client)
    assert value(metrics, "vae_anomaly_threshold", name="pager") == 5.5
    assert ("vae_anomaly_anomalies_total", (("threshold", "pager"),)) in metrics
    client.post("/score", json={"records": [anomalous_record]})
    assert value(samples(client), "vae_anomaly_anomalies_total", threshold="pager") == 1


def test_route_templates_label_requests(client):
    client.put("/thresholds/abc", json={"value": 1.0}, headers=AUTH)
    client.get("/no/such/route")
    metrics = samples(client)
    assert value(metrics, "vae_anomaly_requests_total", endpoint="/thresholds/{name}", status="200") == 1
    assert value(metrics, "vae_anomaly_requests_total", endpoint="unmatched", status="404") == 1


def test_batch_observe_matches_observe_value_by_value():
    from prometheus_client import CollectorRegistry, Histogram, generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    from vae_anomaly.service.metrics import observe_many

    rng = np.random.default_rng(0)
    bounds = [-1.0, 0.0, 0.5, 2.0, 10.0]
    values = np.concatenate([rng.normal(1.0, 3.0, 500), bounds, [1e9, -1e9]])  # incl. values on the bounds
    results = []
    for observe in (lambda h: [h.observe(v) for v in values.tolist()], lambda h: observe_many(h, values)):
        registry = CollectorRegistry()
        histogram = Histogram("s", "scores", buckets=bounds, registry=registry)
        observe(histogram)
        observe_many(histogram, np.array([]))
        text = generate_latest(registry).decode()
        results.append(
            {
                (sample.name, tuple(sorted(sample.labels.items()))): sample.value
                for family in text_string_to_metric_families(text)
                for sample in family.samples
                if not sample.name.endswith("_created")
            }
        )
    one_by_one, batched = results
    assert one_by_one.keys() == batched.keys()
    for key, value in one_by_one.items():
        assert batched[key] == pytest.approx(value, rel=1e-12), key  # the sum's order of additions differs


def test_a_target_fpr_landing_on_another_thresholds_value_is_reported(client, caplog):
    """The tiny model has 160 calibration scores: 0.001 (critical) and 0.0005 both map to the largest."""
    critical = client.get("/thresholds").json()["thresholds"]["critical"]
    with caplog.at_level("WARNING", logger="vae_anomaly.service.routes"):
        response = client.put("/thresholds/pager", json={"target_fpr": 0.0005}, headers=AUTH)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["thresholds"]["pager"]["value"] == critical["value"]
    warning = next(w for w in body["warnings"] if "'critical'" in w)  # 'warn' (0.01) may land there too
    assert "the value of threshold 'critical' (target_fpr 0.001); both flag the same records" in warning
    assert "calibration scores cannot resolve it (at least 1999 are needed)" in warning
    assert "pager" in caplog.text and "critical" in caplog.text
    loose = client.put("/thresholds/loose", json={"target_fpr": 0.3}, headers=AUTH).json()
    assert "warnings" not in loose
    assert "warnings" not in client.put("/thresholds/manual", json={"value": critical["value"]}, headers=AUTH).json()
