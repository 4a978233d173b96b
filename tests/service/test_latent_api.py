"""`POST /encode` and `POST /interpolate` for every kind (records, columnar, images as PNGs or arrays,
sensor series): the same bodies as `/score`, results in its order, the 422s, metrics and OpenAPI."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from tests.conftest import make_bar_images
from tests.service.test_admin_and_metrics import samples, value
from vae_anomaly.model.detector import load_detector
from vae_anomaly.model.latent import MAX_INTERPOLATION_STEPS, LatentCode
from vae_anomaly.service.app import create_app
from vae_anomaly.service.settings import Settings
from vae_anomaly.training.sequence import fit_sequence_detector, sequence_train_config

WINDOW = 6
SENSORS = ["pressure", "flow"]


def columnar(records: list[dict]) -> dict[str, object]:
    names = list(records[0])
    return {"columns": names, "data": [[r[n] for n in names] for r in records]}


# -- tabular -------------------------------------------------------------------------------------------


def test_encode_records_gives_mean_and_std_in_input_order(
    client: TestClient, normal_record, anomalous_record, settings
):
    response = client.post("/encode", json={"records": [normal_record, anomalous_record, normal_record]})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"]["version"] == "test-1" and body["latent_dim"] == 2
    results = body["results"]
    assert [sorted(r) for r in results] == [["mean", "std"]] * 3
    assert results[0] == results[2] and results[0]["mean"] != results[1]["mean"]
    assert all(s > 0 for r in results for s in r["std"])
    detector = load_detector(settings.model_dir, "cpu")
    direct = detector.encode(detector.kind.columns_from_records([normal_record, anomalous_record]))
    np.testing.assert_allclose([r["mean"] for r in results[:2]], direct.mean, rtol=1e-5, atol=1e-6)


def test_encode_columnar_is_the_same_as_records(client: TestClient, normal_record, anomalous_record):
    records = [normal_record, anomalous_record]
    by_records = client.post("/encode", json={"records": records}).json()["results"]
    by_table = client.post("/encode", json=columnar(records))
    assert by_table.status_code == 200, by_table.text
    for a, b in zip(by_records, by_table.json()["results"], strict=True):
        assert a["mean"] == pytest.approx(b["mean"], rel=1e-6)


def test_interpolate_records_goes_from_one_reconstruction_to_the_other(
    client: TestClient, normal_record, anomalous_record
):
    body = {"records": [normal_record, anomalous_record], "steps": 5}
    response = client.post("/interpolate", json=body)
    assert response.status_code == 200, response.text
    out = response.json()
    assert out["t"] == [0.0, 0.25, 0.5, 0.75, 1.0]
    codes = np.array(out["codes"])
    encoded = client.post("/encode", json={"records": body["records"]}).json()["results"]
    means = np.array([r["mean"] for r in encoded])
    np.testing.assert_allclose(codes[[0, -1]], means, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(codes[2], means.mean(axis=0), rtol=1e-5, atol=1e-6)
    points = out["points"]
    assert len(points) == 5 and all(list(p) == list(normal_record) for p in points)
    reconstructions = client.post("/reconstruct", json={"records": body["records"]}).json()["results"]
    assert points[0]["b"] == pytest.approx(reconstructions[0]["reconstruction"]["b"], rel=1e-4)
    assert points[-1]["b"] == pytest.approx(reconstructions[1]["reconstruction"]["b"], rel=1e-4)
    # The columnar body, and the default number of steps.
    table = client.post("/interpolate", json=columnar(body["records"]))  # type: ignore[arg-type]
    assert table.status_code == 200, table.text
    assert len(table.json()["points"]) == 10


@pytest.mark.parametrize(
    ("extra", "loc", "fragment"),
    [
        ({"steps": 1}, ["body", "steps"], "greater than or equal to 2"),
        ({"steps": MAX_INTERPOLATION_STEPS + 1}, ["body", "steps"], f"less than or equal to {MAX_INTERPOLATION_STEPS}"),
        ({"steps": "ten"}, ["body", "steps"], "valid integer"),
        ({"steps": 4.5}, ["body", "steps"], "valid integer"),
        ({"steps": True}, ["body", "steps"], "valid integer"),
        ({"stepz": 4}, ["body", "stepz"], "Extra inputs"),
    ],
)
def test_interpolate_validates_steps(client: TestClient, normal_record, anomalous_record, extra, loc, fragment):
    response = client.post("/interpolate", json={"records": [normal_record, anomalous_record], **extra})
    assert response.status_code == 422, response.text
    detail = response.json()["detail"][0]
    assert detail["loc"] == loc and fragment in detail["msg"], detail


@pytest.mark.parametrize("count", [1, 3])
def test_interpolate_refuses_another_count_of_inputs(client: TestClient, normal_record, count: int):
    for body in ({"records": [normal_record] * count}, columnar([normal_record] * count)):
        response = client.post("/interpolate", json={**body, "steps": 3})
        assert response.status_code == 422, response.text
        detail = response.json()["detail"][0]
        field = "records" if "records" in body else "data"
        assert detail == {
            "loc": ["body", field],
            "msg": f"interpolation needs exactly 2 inputs (the two ends), got {count} row{'' if count == 1 else 's'}",
            "type": "input_count",
        }


def test_bad_records_get_the_score_routes_422s(client: TestClient, normal_record):
    bad = {**normal_record, "a": "abc"}
    for path in ("/encode", "/interpolate"):
        response = client.post(path, json={"records": [normal_record, bad]})
        assert response.status_code == 422, response.text
        assert response.json()["detail"][0]["loc"] == ["body", "records", 1, "a"]
        wrong = client.post(path, json={"arrays": [[[0, 1], [1, 0]]] * 2})
        assert wrong.status_code == 422 and wrong.json()["detail"][0]["type"] == "wrong_model_kind"
        empty = client.post(path, json={"records": []})
        assert empty.status_code == 422 and empty.json()["detail"][0]["loc"] == ["body", "records"]
    too_many = client.post("/encode", json={"records": [normal_record] * 51})
    assert too_many.status_code == 413


def test_a_family_without_a_posterior_gets_codes_without_std(
    client: TestClient, normal_record, anomalous_record, monkeypatch: pytest.MonkeyPatch
):
    """A deterministic autoencoder's `latent_code` has no std: `/encode` leaves the field out and
    `/interpolate` works from the codes alone."""
    network = type(client.app.state.service.loaded()[0].network)  # type: ignore[attr-defined]
    with_std = network.latent_code
    monkeypatch.setattr(network, "latent_code", lambda self, batch: LatentCode(with_std(self, batch).mean))
    records = [normal_record, anomalous_record]
    results = client.post("/encode", json={"records": records}).json()["results"]
    assert [sorted(r) for r in results] == [["mean"], ["mean"]]
    path = client.post("/interpolate", json={"records": records, "steps": 3})
    assert path.status_code == 200 and np.array(path.json()["codes"]).shape == (3, 2)


def test_latent_routes_are_counted_in_the_metrics(client: TestClient, normal_record, anomalous_record):
    records = [normal_record, anomalous_record]
    client.post("/encode", json={"records": records})
    client.post("/encode", json={"records": records})
    client.post("/interpolate", json={"records": records, "steps": 3})
    client.post("/interpolate", json={"records": records[:1]})
    metrics = samples(client)
    assert value(metrics, "vae_anomaly_requests_total", endpoint="/encode", status="200") == 2
    assert value(metrics, "vae_anomaly_requests_total", endpoint="/interpolate", status="200") == 1
    assert value(metrics, "vae_anomaly_requests_total", endpoint="/interpolate", status="422") == 1
    assert value(metrics, "vae_anomaly_request_duration_seconds_count", endpoint="/encode") == 2
    assert value(metrics, "vae_anomaly_records_scored_total") == 0  # encoding is not scoring


def test_openapi_documents_the_latent_routes(client: TestClient):
    paths = client.get("/openapi.json").json()["paths"]
    encode_body = paths["/encode"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    # The loaded model's own envelopes (a tabular model here), with its features (issue 14, item 24).
    fields = {p for s in encode_body["oneOf"] for p in s["properties"]}
    assert {"records", "columns", "data"} == fields - {"explain", "ids"}
    assert encode_body == paths["/score"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    interpolate_body = paths["/interpolate"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert all(s["properties"]["steps"]["maximum"] == MAX_INTERPOLATION_STEPS for s in interpolate_body["oneOf"])
    for path in ("/encode", "/interpolate"):
        responses = paths[path]["post"]["responses"]
        assert {"200", "413", "422"} <= set(responses)


# -- images --------------------------------------------------------------------------------------------


@pytest.fixture
def image_client(tiny_image_model_dir: Path) -> Iterator[TestClient]:
    settings = Settings(model_dir=tiny_image_model_dir, device="cpu", max_batch=20, max_image_pixels=4096)
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def png(pixels: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode="L").save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def test_encode_images_as_pngs_or_arrays(image_client: TestClient):
    images = make_bar_images(3, seed=5)
    by_png = image_client.post("/encode", json={"images": [png(i) for i in images]})
    by_array = image_client.post("/encode", json={"arrays": [i.tolist() for i in images]})
    assert by_png.status_code == by_array.status_code == 200, by_png.text
    assert by_png.json()["latent_dim"] == 2
    for a, b in zip(by_png.json()["results"], by_array.json()["results"], strict=True):
        assert a["mean"] == pytest.approx(b["mean"], rel=1e-5) and len(a["std"]) == 2


def test_interpolate_images_gives_pngs_at_the_model_geometry(image_client: TestClient):
    images = make_bar_images(2, seed=7)
    response = image_client.post("/interpolate", json={"images": [png(i) for i in images], "steps": 4})
    assert response.status_code == 200, response.text
    points = response.json()["points"]
    assert len(points) == 4
    for point in points:
        image = Image.open(io.BytesIO(base64.b64decode(point)))
        assert image.format == "PNG" and image.size == (8, 8)
    three = image_client.post("/interpolate", json={"arrays": [i.tolist() for i in make_bar_images(3)]})
    assert three.status_code == 422
    assert three.json()["detail"][0]["loc"] == ["body", "arrays"]
    assert "got 3 images" in three.json()["detail"][0]["msg"]


# -- sequences -----------------------------------------------------------------------------------------


def stream(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    return np.stack([np.sin(t / 4) + 0.05 * rng.normal(size=n), 2 * np.cos(t / 4) + 0.05 * rng.normal(size=n)], 1)


@pytest.fixture(scope="module")
def sequence_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    config = sequence_train_config(epochs=2, window=WINDOW, device="cpu", score_samples=4)
    result = fit_sequence_detector(stream(200), SENSORS, config, progress=False)
    directory = tmp_path_factory.mktemp("sequence") / "model"
    result.detector.save(directory)
    with TestClient(create_app(Settings(model_dir=directory, device="cpu"))) as test_client:
        yield test_client


def series(rows: np.ndarray, **extra: object) -> dict[str, object]:
    return {"series": {"columns": SENSORS, "data": rows.tolist()}, **extra}


def test_encode_series_gives_one_code_per_window_with_its_row_and_timestamp(sequence_client: TestClient):
    rows = stream(10, seed=1)
    stamps = [f"2026-01-01T00:00:{s:02d}" for s in range(10)]
    response = sequence_client.post("/encode", json=series(rows, timestamps=stamps))
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    scored = sequence_client.post("/score", json=series(rows, timestamps=stamps)).json()["results"]
    assert [(r["row"], r["timestamp"]) for r in results] == [(r["row"], r["timestamp"]) for r in scored]
    assert [r["row"] for r in results] == list(range(WINDOW - 1, 10))
    assert all(len(r["mean"]) == len(r["std"]) == response.json()["latent_dim"] for r in results)


def test_interpolate_series_needs_exactly_two_windows(sequence_client: TestClient):
    response = sequence_client.post("/interpolate", json=series(stream(WINDOW + 1, seed=2), steps=3))
    assert response.status_code == 200, response.text
    points = response.json()["points"]
    assert len(points) == 3 and all(sorted(p) == sorted(SENSORS) and len(p["flow"]) == WINDOW for p in points)
    longer = sequence_client.post("/interpolate", json=series(stream(WINDOW + 3, seed=2), steps=3))
    assert longer.status_code == 422
    detail = longer.json()["detail"][0]
    assert detail["loc"] == ["body", "series"] and "got 4 windows" in detail["msg"]
