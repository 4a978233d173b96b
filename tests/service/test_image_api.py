"""The HTTP API for an image model: the same routes, scores and thresholds as tabular models, with
images in as base64 PNG/JPEG or arrays, PNGs out, and clear 4xx for every bad input."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from tests.conftest import API_TOKEN, make_bar_images
from vae_anomaly.service.app import create_app
from vae_anomaly.service.settings import Settings


@pytest.fixture
def image_client(tiny_image_model_dir: Path) -> Iterator[TestClient]:
    settings = Settings(
        model_dir=tiny_image_model_dir, device="cpu", api_token=API_TOKEN, max_batch=20, max_image_pixels=4096
    )
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def png(pixels: np.ndarray, mode: str = "L") -> str:
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode=mode).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def decoded(text: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(text)))


def anomalous_image() -> np.ndarray:
    image = np.zeros((8, 8), dtype=np.uint8)
    image[5, :] = 255  # a horizontal bar: normal images have one vertical bar
    return image


def test_png_and_array_give_the_same_score(image_client: TestClient):
    images = [make_bar_images(1, seed=3)[0], anomalous_image()]
    by_png = image_client.post("/score", json={"images": [png(i) for i in images]})
    by_array = image_client.post("/score", json={"arrays": [i.tolist() for i in images]})
    assert by_png.status_code == by_array.status_code == 200, by_png.text
    for a, b in zip(by_png.json()["results"], by_array.json()["results"], strict=True):
        assert a["score"] == pytest.approx(b["score"], rel=1e-5)
        assert a["top_regions"] == b["top_regions"]


def test_score_results_have_the_tabular_fields_and_top_regions(image_client: TestClient):
    response = image_client.post("/score", json={"arrays": [anomalous_image().tolist()], "explain": 2})
    body = response.json()
    assert body["model"]["version"] == "img-1"
    result = body["results"][0]
    for field in ("score", "elbo", "reconstruction_error", "p_value", "is_anomaly", "thresholds_exceeded"):
        assert field in result
    assert "top_features" not in result and "missing" not in result
    assert result["is_anomaly"] is True
    regions = result["top_regions"]
    assert len(regions) == 2
    assert regions[0]["contribution"] >= regions[1]["contribution"]
    # the horizontal bar is on row 5: the worst region covers it
    assert regions[0]["y"] <= 5 < regions[0]["y"] + regions[0]["height"]
    for region in regions:
        assert 0 <= region["x"] < 8 and 0 < region["x"] + region["width"] <= 8


def test_colour_input_is_accepted_by_a_grey_model(image_client: TestClient):
    rgb = np.stack([make_bar_images(1)[0]] * 3, axis=-1)
    response = image_client.post("/score", json={"images": [png(rgb, "RGB")]})
    assert response.status_code == 200


def test_reconstruct_returns_pngs_at_the_input_size(image_client: TestClient):
    response = image_client.post("/reconstruct", json={"images": [png(anomalous_image())]})
    assert response.status_code == 200, response.text
    result = response.json()["results"][0]
    reconstruction, heatmap = decoded(result["reconstruction"]), decoded(result["heatmap"])
    assert reconstruction.size == (8, 8) and reconstruction.mode == "L"
    assert heatmap.size == (8, 8) and heatmap.mode == "RGB"
    assert result["reconstruction_error"] > 0
    # the heatmap is hottest (reddest) on the unexpected horizontal bar
    red = np.asarray(heatmap)[..., 0].astype(float)
    assert red[5].mean() > red[np.arange(8) != 5].mean()


def test_sample_returns_pngs_or_one_grid(image_client: TestClient):
    samples = image_client.post("/sample", json={"n": 3, "seed": 7}).json()
    assert len(samples["samples"]) == 3
    assert decoded(samples["samples"][0]).size == (8, 8)
    again = image_client.post("/sample", json={"n": 3, "seed": 7}).json()
    assert again["samples"] == samples["samples"]
    grid = image_client.post("/sample", json={"n": 4, "seed": 7, "grid": True}).json()
    assert set(grid) == {"model", "seed", "grid"}
    assert decoded(grid["grid"]).size == (19, 19)  # 2×2 tiles of 8 px, 1 px padding


def test_records_for_an_image_model_get_a_422_naming_the_kind(image_client: TestClient):
    response = image_client.post("/score", json={"records": [{"a": 1}]})
    assert response.status_code == 422
    detail = response.json()["detail"][0]
    assert detail["loc"] == ["body", "records"]
    assert "image model" in detail["msg"] and "'images'" in detail["msg"]


def test_images_for_a_tabular_model_get_a_422_naming_the_kind(client: TestClient):
    response = client.post("/score", json={"images": ["AAAA"]})
    assert response.status_code == 422
    assert "tabular model" in response.json()["detail"][0]["msg"]
    grid = client.post("/sample", json={"n": 2, "grid": True})
    assert grid.status_code == 422


@pytest.mark.parametrize(
    ("body", "loc", "kind"),
    [
        ({"images": ["%%%"]}, ["body", "images", 0], "base64_invalid"),
        ({"images": [base64.b64encode(b"hello").decode()]}, ["body", "images", 0], "image_invalid"),
        ({"arrays": [[[0, 1], [2, 3]]]}, ["body", "arrays", 0], "image_size"),
        ({"arrays": [[[0, 300]]]}, ["body", "arrays", 0], "pixel_range"),
        ({"images": ["AAAA"], "arrays": [[[0]]]}, ["body"], None),
        ({}, ["body"], None),
        ({"arrays": []}, ["body", "arrays"], None),
    ],
)
def test_bad_images_get_a_422_naming_the_image(image_client: TestClient, body: dict, loc: list, kind: str | None):
    response = image_client.post("/score", json=body)
    assert response.status_code == 422, response.text
    detail = response.json()["detail"][0]
    assert detail["loc"] == loc
    if kind:
        assert detail["type"] == kind


def test_the_index_of_the_bad_image_is_named(image_client: TestClient):
    good = png(make_bar_images(1)[0])
    response = image_client.post("/score", json={"images": [good, good, "!!"]})
    assert response.json()["detail"][0]["loc"] == ["body", "images", 2]


def test_images_above_the_pixel_limit_are_refused(image_client: TestClient):
    response = image_client.post("/score", json={"images": [png(np.zeros((100, 100), dtype=np.uint8))]})
    assert response.status_code == 422
    assert response.json()["detail"][0]["type"] == "image_too_large"


def test_too_many_images_is_a_413(image_client: TestClient):
    response = image_client.post("/score", json={"arrays": [anomalous_image().tolist()] * 21})
    assert response.status_code == 413


def test_model_endpoint_and_metrics_show_an_image_model(image_client: TestClient):
    model = image_client.get("/model").json()
    assert model["kind"] == "image" and "schema" not in model
    assert model["image"]["height"] == 8
    image_client.post("/score", json={"arrays": [anomalous_image().tolist()]})
    metrics = image_client.get("/metrics").text
    assert 'kind="image"' in metrics
    assert "vae_anomaly_records_scored_total 1.0" in metrics


def test_image_results_echo_ids(image_client: TestClient):
    image = anomalous_image().tolist()
    response = image_client.post("/score", json={"arrays": [image, image], "ids": ["a.png", "b.png"]})
    assert response.status_code == 200, response.text
    assert [r["id"] for r in response.json()["results"]] == ["a.png", "b.png"]
