"""Request cost is bounded for image models that resize (issue 14, item 19): a small PNG that decodes
to 2048×2048 pixels cannot make one request cost seconds of the compute thread or return megabytes."""

from __future__ import annotations

import base64
import io
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

import vae_anomaly.model.kinds.image.images as images_module
from tests.conftest import API_TOKEN
from vae_anomaly.model.artifact import MANIFEST, write_manifest
from vae_anomaly.service.app import create_app
from vae_anomaly.service.settings import Settings


def png(height: int, width: int) -> str:
    """A flat grey PNG: a few hundred bytes whatever its size, as in the issue's 4 KB → 2048² case."""
    buffer = io.BytesIO()
    Image.fromarray(np.full((height, width), 40, dtype=np.uint8), mode="L").save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


@pytest.fixture
def resizing_model(tiny_image_model_dir: Path, tmp_path: Path) -> Path:
    """The tiny 8×8 image model, told to resize other sizes (a manifest edit, re-sealed)."""
    target = tmp_path / "resizing"
    shutil.copytree(tiny_image_model_dir, target)
    raw = json.loads((target / MANIFEST).read_text())
    raw["kind_config"]["image"]["resize"] = True
    write_manifest(target, raw)
    return target


def client_for(model_dir: Path, **limits: int) -> TestClient:
    settings = Settings(model_dir=model_dir, device="cpu", api_token=API_TOKEN, **limits)
    return TestClient(create_app(settings))


@pytest.fixture
def resizing_client(resizing_model: Path) -> Iterator[TestClient]:
    with client_for(resizing_model, max_request_pixels=3 * 64 * 64) as client:
        yield client


def test_request_pixels_over_the_budget_are_a_413_before_decoding(resizing_client: TestClient, monkeypatch):
    decoded: list[tuple] = []
    real = images_module.image_to_array

    def counting(image):
        decoded.append(image.size)
        return real(image)

    monkeypatch.setattr(images_module, "image_to_array", counting)
    response = resizing_client.post("/score", json={"images": [png(64, 64)] * 5})
    assert response.status_code == 413, response.text
    (item,) = response.json()["detail"]
    assert item["loc"] == ["body", "images", 3] and item["type"] == "request_pixels"
    assert "16384 pixels, above the limit of 12288 pixels per request" in item["msg"]
    assert "VAE_ANOMALY_MAX_REQUEST_PIXELS" in item["msg"]
    assert len(decoded) == 3  # the fourth image was refused from its header, the fifth never looked at
    assert resizing_client.post("/score", json={"images": [png(64, 64)] * 3}).status_code == 200


def test_arrays_count_against_the_budget_too(resizing_client: TestClient):
    arrays = [np.zeros((64, 64), dtype=int).tolist()] * 4
    response = resizing_client.post("/reconstruct", json={"arrays": arrays})
    assert response.status_code == 413 and response.json()["detail"][0]["loc"] == ["body", "arrays", 3]


def test_reconstruct_renders_at_a_bounded_size(resizing_model: Path):
    """A 2048×1024 input is rendered at 724×362 (at most 512² pixels, aspect kept), not upscaled to
    2048×1024 PNGs; a small input keeps its own size."""
    with client_for(resizing_model) as client:
        response = client.post("/reconstruct", json={"images": [png(1024, 2048), png(16, 12)]})
    assert response.status_code == 200, response.text
    large, small = response.json()["results"]
    for field in ("reconstruction", "heatmap"):
        width, height = Image.open(io.BytesIO(base64.b64decode(large[field]))).size
        assert width * height <= 512 * 512 and (width, height) == (724, 362)
        assert Image.open(io.BytesIO(base64.b64decode(small[field]))).size == (12, 16)


def test_default_budget_allows_a_full_mnist_batch():
    """10,000 28×28 images (the largest batch) fit the default budget; 40 images of 2048² do not."""
    limit = Settings().max_request_pixels
    assert 10_000 * 28 * 28 <= limit < 40 * 2048 * 2048
