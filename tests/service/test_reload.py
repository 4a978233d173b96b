"""POST /admin/reload: verified, atomic, admin-only; a broken artifact leaves the old model serving."""

from __future__ import annotations

import shutil
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

import vae_anomaly.service.reload
from tests.conftest import API_TOKEN
from tests.service.conftest import break_weights, set_version
from tests.service.test_admin_and_metrics import samples, value
from vae_anomaly.service.reload import load_verified

AUTH = {"Authorization": f"Bearer {API_TOKEN}"}


@pytest.fixture
def second_model(tiny_model_dir, tmp_path):
    """The tiny artifact under another version: what a retrained model looks like to the server."""
    target = tmp_path / "second"
    shutil.copytree(tiny_model_dir, target)
    set_version(target, "test-2")
    return target


def model_info_versions(client) -> set[str]:
    return {
        dict(labels)["version"]
        for (name, labels), v in samples(client).items()
        if name == "vae_anomaly_model_info" and v == 1
    }


def test_reload_needs_the_admin_token(client, second_model):
    body = {"model_dir": str(second_model)}
    assert client.post("/admin/reload", json=body).status_code == 401
    assert client.post("/admin/reload", json=body, headers={"Authorization": "Bearer nope"}).status_code == 403
    assert client.get("/model").json()["version"] == "test-1"


def test_reload_swaps_in_the_new_model(client, second_model, normal_record):
    response = client.post("/admin/reload", json={"model_dir": str(second_model)}, headers=AUTH)
    assert response.status_code == 200, response.text
    report = response.json()
    assert report["model"]["version"] == "test-2" and report["previous"]["version"] == "test-1"
    assert report["model_dir"] == str(second_model) and report["schema_changed"] is False
    assert report["workers"] == 1
    assert client.get("/model").json()["version"] == "test-2"
    assert client.post("/score", json={"records": [normal_record]}).json()["model"]["version"] == "test-2"
    metrics = samples(client)
    assert model_info_versions(client) == {"test-2"}  # the previous model's info series is gone
    assert value(metrics, "vae_anomaly_reloads_total", result="success") == 1
    assert value(metrics, "vae_anomaly_reloads_total", result="failure") == 0
    assert value(metrics, "vae_anomaly_model_loaded_timestamp_seconds") > 0


def test_reload_without_a_body_rereads_the_served_directory(settings, tiny_model_dir, tmp_path):
    from fastapi.testclient import TestClient

    from vae_anomaly.service.app import create_app

    served = tmp_path / "served"
    shutil.copytree(tiny_model_dir, served)
    with TestClient(create_app(settings.model_copy(update={"model_dir": served}))) as client:
        set_version(served, "test-3")
        response = client.post("/admin/reload", headers=AUTH)
        assert response.status_code == 200, response.text
        assert client.get("/model").json()["version"] == "test-3"


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (break_weights, "weights.safetensors: sha256"),
        (lambda d: (d / "manifest.json").write_text("{"), "manifest.json: not valid JSON"),
        (lambda d: shutil.rmtree(d), "model directory not found"),
    ],
)
def test_a_broken_artifact_leaves_the_old_model_serving(client, second_model, normal_record, damage, message):
    damage(second_model)
    response = client.post("/admin/reload", json={"model_dir": str(second_model)}, headers=AUTH)
    assert response.status_code == 422
    (item,) = response.json()["detail"]
    assert item["loc"] == ["body", "model_dir"] and item["type"] == "artifact_invalid"
    assert message in item["msg"] and "still serving model" in item["msg"] and "test-1" in item["msg"]
    assert client.get("/model").json()["version"] == "test-1"
    assert client.post("/score", json={"records": [normal_record]}).status_code == 200
    assert value(samples(client), "vae_anomaly_reloads_total", result="failure") == 1
    assert model_info_versions(client) == {"test-1"}


def test_reload_rejects_a_bad_body(client):
    for body in (b'{"model_dir": 3}', b'{"other": "x"}', b"{nope"):
        response = client.post("/admin/reload", content=body, headers=AUTH)
        assert 400 <= response.status_code < 500, response.text


def test_a_warm_up_that_does_not_score_is_refused(tiny_model_dir, monkeypatch):
    import numpy as np

    from vae_anomaly.model.detector import Detector
    from vae_anomaly.model.errors import ArtifactError

    real_score = Detector.score

    def nan_score(self, columns):
        scored = real_score(self, columns)
        scored.terms.score[:] = np.nan
        return scored

    monkeypatch.setattr(Detector, "score", nan_score)
    with pytest.raises(ArtifactError, match="warm-up scores are not finite"):
        load_verified(tiny_model_dir, "cpu")


def test_requests_in_flight_finish_on_the_old_model(client, second_model, normal_record, monkeypatch):
    """A /score that took its snapshot before the swap is scored and answered by the old model."""
    entered, release = threading.Event(), threading.Event()
    old_detector = client.app.state.service.detector
    real_score = old_detector.score

    def slow_score(columns):
        entered.set()
        assert release.wait(30)
        return real_score(columns)

    monkeypatch.setattr(old_detector, "score", slow_score)
    with ThreadPoolExecutor(1) as pool:
        in_flight = pool.submit(client.post, "/score", json={"records": [normal_record]})
        assert entered.wait(30)
        reload = client.post("/admin/reload", json={"model_dir": str(second_model)}, headers=AUTH)
        assert reload.status_code == 200
        assert client.get("/model").json()["version"] == "test-2"
        release.set()
        response = in_flight.result(30)
    assert response.status_code == 200
    assert response.json()["model"]["version"] == "test-1"
    assert value(samples(client), "vae_anomaly_records_scored_total") == 1


def test_a_second_reload_while_one_runs_gets_409(client, second_model, monkeypatch):
    entered, release = threading.Event(), threading.Event()
    real_load = vae_anomaly.service.reload.load_verified

    def slow_load(model_dir, device):
        entered.set()
        assert release.wait(30)
        return real_load(model_dir, device)

    monkeypatch.setattr(vae_anomaly.service.reload, "load_verified", slow_load)
    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(client.post, "/admin/reload", json={"model_dir": str(second_model)}, headers=AUTH)
        assert entered.wait(30)
        second = client.post("/admin/reload", headers=AUTH)
        release.set()
        assert first.result(30).status_code == 200
    assert second.status_code == 409
    assert "already running" in second.json()["detail"][0]["msg"]


def test_thresholds_come_from_the_new_artifact(client, second_model):
    client.put("/thresholds/pager", json={"value": 5.0}, headers=AUTH)
    client.post("/admin/reload", json={"model_dir": str(second_model)}, headers=AUTH)
    assert "pager" not in client.get("/thresholds").json()["thresholds"]
    metrics = samples(client)
    assert ("vae_anomaly_threshold", (("name", "pager"),)) not in metrics
    assert ("vae_anomaly_threshold", (("name", "warn"),)) in metrics


def test_reload_can_switch_to_an_image_model(client, tiny_image_model_dir, normal_record):
    """The kind follows the artifact: after the reload, records get the wrong-kind 422 and images score."""
    response = client.post("/admin/reload", json={"model_dir": str(tiny_image_model_dir)}, headers=AUTH)
    assert response.status_code == 200, response.text
    assert client.get("/model").json()["kind"] == "image"
    records = client.post("/score", json={"records": [normal_record]})
    assert records.status_code == 422 and records.json()["detail"][0]["type"] == "wrong_model_kind"
    image = [[0] * 8 for _ in range(8)]
    assert client.post("/score", json={"arrays": [image]}).status_code == 200
    assert 'kind="image"' in client.get("/metrics").text
