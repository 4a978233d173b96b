"""Fleet-wide thresholds (service.threshold_file): the override file is applied at start-up and
whenever it changes, `PUT` writes through to it atomically and says so, a bad file leaves the
thresholds in force, an unwritable file answers 409, the active-threshold gauge follows, and two
`serve` processes given the same artifact and file answer alike, also after a change through one."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.conftest import API_TOKEN
from tests.service.conftest import ServerProcess, tiny_records, wait_for
from vae_anomaly.model.thresholds import threshold_for_fpr
from vae_anomaly.service.app import create_app
from vae_anomaly.service.settings import Settings

AUTH = {"Authorization": f"Bearer {API_TOKEN}"}


def _wait(condition, what: str, seconds: float = 20.0) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _gauge(client: TestClient, metric: str, name: str) -> float | None:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(f'{metric}{{name="{name}"}}'):
            return float(line.rsplit(" ", 1)[1])
    return None


@pytest.fixture
def file_settings(settings: Settings, tmp_path: Path) -> Settings:
    path = tmp_path / "thresholds.json"
    path.write_text(json.dumps({"active": "page", "thresholds": {"page": {"value": 5.0}, "warn": {"target_fpr": 0.2}}}))
    return settings.model_copy(update={"thresholds_file": path, "thresholds_poll_seconds": 0.05})


def test_the_file_overrides_the_artifact_at_start(file_settings: Settings):
    with TestClient(create_app(file_settings)) as client:
        body = client.get("/thresholds").json()
        detector = client.app.state.service.detector  # type: ignore[attr-defined]
        assert body["active"] == "page"
        assert body["thresholds"]["page"] == {"value": 5.0, "target_fpr": None}
        assert body["thresholds"]["warn"] == {
            "value": threshold_for_fpr(detector.thresholds.calibration, 0.2),
            "target_fpr": 0.2,
        }
        assert "critical" in body["thresholds"]  # the artifact's other thresholds stay
        assert _gauge(client, "vae_anomaly_threshold_active", "page") == 1.0
        assert _gauge(client, "vae_anomaly_threshold_active", "warn") == 0.0
        assert _gauge(client, "vae_anomaly_threshold", "page") == 5.0


def test_a_changed_file_is_applied_and_a_bad_one_is_not(file_settings: Settings, caplog):
    path = file_settings.thresholds_file
    assert path is not None
    with TestClient(create_app(file_settings)) as client:
        path.write_text(json.dumps({"active": "critical"}))
        _wait(lambda: client.get("/thresholds").json()["active"] == "critical", "the change to apply")
        assert "page" not in client.get("/thresholds").json()["thresholds"]  # the file, over the artifact
        assert _gauge(client, "vae_anomaly_threshold_active", "critical") == 1.0
        path.write_text('{"active": "nosuch"}  ')
        # Wait for this file's own message: `write_text` truncates before it writes, so a poll in
        # between can read an empty file and log "not applied" for that one first (harmless: the
        # thresholds in force stay), which made a wait on "not applied" alone racy under load.
        _wait(lambda: "active threshold 'nosuch' is not defined" in caplog.text, "the bad file to be logged")
        assert "not applied" in caplog.text
        assert client.get("/thresholds").json()["active"] == "critical"


def test_put_writes_through_to_the_file(file_settings: Settings):
    path = file_settings.thresholds_file
    assert path is not None
    with TestClient(create_app(file_settings)) as client:
        response = client.put("/thresholds/pager", json={"value": 7.5}, headers=AUTH)
        assert response.status_code == 200
        assert response.json()["applies_to"] == f"every worker and replica reading {path}"
        active = client.put("/active-threshold", json={"name": "pager"}, headers=AUTH).json()
        assert active["active"] == "pager"
        on_disk = json.loads(path.read_text())
        assert on_disk == {
            "active": "pager",
            "thresholds": {"page": {"value": 5.0}, "warn": {"target_fpr": 0.2}, "pager": {"value": 7.5}},
        }
        assert not [p.name for p in path.parent.iterdir() if p.name.startswith(".thresholds.json.")]  # no temp left
        assert client.put("/active-threshold", json={"name": "nosuch"}, headers=AUTH).status_code == 404
        assert json.loads(path.read_text())["active"] == "pager"


def test_an_unwritable_file_answers_409(file_settings: Settings, tmp_path: Path):
    """A path whose directory is missing cannot be written even by root: the 409 path."""
    missing = tmp_path / "gone" / "thresholds.json"
    with TestClient(create_app(file_settings.model_copy(update={"thresholds_file": missing}))) as client:
        response = client.put("/thresholds/pager", json={"value": 7.5}, headers=AUTH)
        assert response.status_code == 409
        assert response.json()["detail"][0]["type"] == "thresholds_file"
        assert client.get("/thresholds").json()["active"] == "warn"  # the artifact's, unchanged


def test_two_replicas_share_the_file(served_model: Path, start_server, tmp_path: Path):
    path = tmp_path / "fleet.json"
    path.write_text(json.dumps({"thresholds": {"warn": {"target_fpr": 0.3}}}))
    env = {"VAE_ANOMALY_THRESHOLDS_FILE": str(path), "VAE_ANOMALY_THRESHOLDS_POLL_SECONDS": "0.1"}
    first: ServerProcess = start_server(served_model, **env)
    second: ServerProcess = start_server(served_model, **env)
    records = tiny_records(30, seed=9)

    def answers(server: ServerProcess) -> tuple[object, object]:
        status, body = server.post("/score", {"records": records})
        assert status == 200
        return server.get("/thresholds")[1], [(r["score"], r["is_anomaly"]) for r in body["results"]]

    assert answers(first) == answers(second)
    assert json.loads(first.get("/thresholds")[1])["thresholds"]["warn"]["target_fpr"] == 0.3
    status, body = first.request("PUT", "/thresholds/warn", {"value": -1e6}, AUTH)[:2]
    assert status == 200 and json.loads(body)["applies_to"].startswith("every worker and replica")
    wait_for(lambda: json.loads(second.get("/thresholds")[1])["thresholds"]["warn"]["value"] == -1e6, "replica 2")
    assert answers(first) == answers(second)
    assert all(flag for _, flag in answers(second)[1])  # every record above a threshold of -1e6
