"""Shared fixtures: seeded data, a tiny trained artifact (once per session) and API clients whose
lifespan runs (`with TestClient(...)`), each app with its own metrics registry."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient

from vae_anomaly.model.kinds.tabular.schema import FeatureSpec, Schema
from vae_anomaly.service.app import create_app
from vae_anomaly.service.settings import Settings
from vae_anomaly.training.tabular import fit_detector
from vae_anomaly.training.trainer import TrainConfig

API_TOKEN = "test-token-0123456789"

SCORE_RESULT_FIELDS = (
    *("score", "elbo", "reconstruction_error", "p_value", "is_anomaly"),
    *("thresholds_exceeded", "missing", "top_features"),
)
"""The fields of one `/score` result, which `vae-anomaly score` writes as columns too."""


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Run torch with one intra-op thread. The networks here are tiny: with more threads, OpenMP
    workers spin against any other load on a 2-core machine and training gets ten times slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(autouse=True, scope="module")
def _one_thread_per_module() -> Iterator[None]:
    with one_thread():
        yield


def make_tiny_columns(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Mixed-type normal rows: two correlated numerics, an integer, a category, a boolean; a few gaps."""
    rng = np.random.default_rng(seed)
    a = rng.normal(10.0, 2.0, n)
    b = 3.0 * a + rng.normal(0.0, 0.5, n)
    count = rng.poisson(3, n).astype(np.float64)
    color = rng.choice(["red", "green", "blue"], n, p=[0.5, 0.3, 0.2]).astype(object)
    flag = (a > 10).astype(bool)
    b[rng.random(n) < 0.05] = np.nan
    color[rng.random(n) < 0.05] = None
    return {"a": a, "b": b, "count": count, "color": color, "flag": flag}


def drifting_stream(n: int, seed: int = 0, climb: float = 0.02) -> np.ndarray:
    """Three sensors: pressure and flow cycle fast around a fixed level, temperature climbs slowly
    (`climb` per step) with a little noise; shared by the sequence tests."""
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    return np.stack(
        [np.sin(t / 3) + 0.05 * rng.normal(size=n), np.cos(t / 3) + 0.05 * rng.normal(size=n),
         40 + climb * t + 0.05 * rng.normal(size=n)], 1,
    )  # fmt: skip


def tiny_config(**overrides) -> TrainConfig:
    base = {"epochs": 25, "hidden_dims": [32, 16], "latent_dim": 2, "score_samples": 8, "patience": 10}
    return TrainConfig(**{**base, **overrides})


def image_tiny_config(**overrides) -> TrainConfig:
    """`tiny_config` for image models: the same loop knobs, no tabular backbone widths."""
    base = {"epochs": 25, "latent_dim": 2, "score_samples": 8, "patience": 10}
    return TrainConfig(**{**base, **overrides})


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small model trained once per session on 800 rows; feature 'a' is required."""
    columns = make_tiny_columns(800)
    overrides = Schema(features=[FeatureSpec(name="a", type="numeric", required=True)])
    with one_thread():
        result = fit_detector(columns, tiny_config(), overrides, version="test-1", progress=False)
    directory = tmp_path_factory.mktemp("artifact") / "tiny"
    result.detector.save(directory)
    return directory


@pytest.fixture
def settings(tiny_model_dir: Path) -> Settings:
    return Settings(model_dir=tiny_model_dir, device="cpu", api_token=API_TOKEN, max_batch=50, max_samples=100)


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as test_client:
        yield test_client


@pytest.fixture
def normal_record() -> dict[str, object]:
    return {"a": 10.0, "b": 30.1, "count": 3, "color": "red", "flag": False}


@pytest.fixture
def anomalous_record() -> dict[str, object]:
    return {"a": 10.0, "b": -45.0, "count": 3, "color": "red", "flag": False}


def make_bar_images(n: int, seed: int = 0, size: int = 8) -> np.ndarray:
    """Normal images for the image tests: one bright vertical bar at a random column on a dark
    background, uint8 (n, size, size). An anomaly is anything else (a horizontal bar, noise)."""
    rng = np.random.default_rng(seed)
    images = np.zeros((n, size, size), dtype=np.uint8)
    columns = rng.integers(1, size - 1, n)
    images[np.arange(n), :, columns] = 255
    return images


@pytest.fixture(scope="session")
def tiny_image_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small 8×8 grey image model, trained once per session on 300 bar images."""
    from vae_anomaly.model.kinds.image.images import ImageSpec
    from vae_anomaly.training.image_trainer import fit_image_detector

    spec = ImageSpec(height=8, width=8, channels=1)
    pixels = make_bar_images(300)[:, None].astype(np.float32) / 255.0
    with one_thread():
        result = fit_image_detector(pixels, spec, image_tiny_config(epochs=15), version="img-1", progress=False)
    directory = tmp_path_factory.mktemp("artifact") / "tiny-image"
    result.detector.save(directory)
    return directory
