"""Every family on every data kind: a tiny model trains, scores, serves (/score, /reconstruct,
/encode, /interpolate, /thresholds, /sample or its 422), hot-reloads and reloads from disk with
identical scores, through the same routes."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from tests.conftest import API_TOKEN, image_tiny_config, make_bar_images, make_tiny_columns, one_thread, tiny_config
from vae_anomaly.model.detector import Detector, load_detector
from vae_anomaly.model.families import FAMILIES
from vae_anomaly.model.kinds.base import InputLimits
from vae_anomaly.model.kinds.image.images import ImageSpec
from vae_anomaly.service.app import create_app
from vae_anomaly.service.settings import Settings
from vae_anomaly.training.image_trainer import fit_image_detector
from vae_anomaly.training.sequence import fit_sequence_detector, sequence_train_config
from vae_anomaly.training.tabular import fit_detector
from vae_anomaly.training.trainer import TrainResult

AUTH = {"Authorization": f"Bearer {API_TOKEN}"}
SENSORS = ["pressure", "flow"]
WINDOW = 6

UNCONDITIONAL = [name for name, family in FAMILIES.items() if not family.conditional]
"""The families that model x alone (the CVAE needs a condition: tests/service/test_cvae_*.py)."""
DETERMINISTIC = {"ae", "dae", "sparse-ae", "aae"}
"""The families without a posterior distribution: `/encode` gives their code and no std."""


def stream(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    return np.stack([np.sin(t / 4) + 0.05 * rng.normal(size=n), np.cos(t / 4) + 0.05 * rng.normal(size=n)], 1)


def train_tabular(family: str) -> TrainResult:
    config = tiny_config(family=family, epochs=2, hidden_dims=[16], score_samples=4)
    return fit_detector(make_tiny_columns(200), config, None, version="fam-1", progress=False)


def train_image(family: str) -> TrainResult:
    pixels = make_bar_images(80)[:, None].astype(np.float32) / 255.0
    config = image_tiny_config(family=family, epochs=2, score_samples=4)
    return fit_image_detector(pixels, ImageSpec(height=8, width=8, channels=1), config, version="fam-1", progress=False)


def train_sequence(family: str) -> TrainResult:
    config = sequence_train_config(family=family, epochs=2, window=WINDOW, device="cpu", score_samples=4)
    return fit_sequence_detector(stream(200), SENSORS, config, progress=False)


def tabular_body() -> dict[str, object]:
    return {"records": [{"a": 10.0, "b": 30.1, "count": 3, "color": "red", "flag": False}] * 2}


def image_body() -> dict[str, object]:
    return {"arrays": [image.tolist() for image in make_bar_images(2, seed=5)]}


def sequence_body() -> dict[str, object]:
    return {"series": {"columns": SENSORS, "data": stream(WINDOW + 1, seed=3).tolist()}}


KINDS: dict[str, tuple[Callable[[str], TrainResult], Callable[[], dict[str, object]]]] = {
    "tabular": (train_tabular, tabular_body),
    "image": (train_image, image_body),
    "sequence": (train_sequence, sequence_body),
}


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str, str], Path]:
    """Train (once per module) and save the tiny model of a family and kind."""
    cache: dict[tuple[str, str], Path] = {}

    def get(family: str, kind: str) -> Path:
        if (family, kind) not in cache:
            with one_thread():
                result = KINDS[kind][0](family)
            directory = tmp_path_factory.mktemp("families") / f"{family}-{kind}"
            result.detector.save(directory)
            cache[family, kind] = directory
        return cache[family, kind]

    return get


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("family", UNCONDITIONAL)
def test_family_trains_serves_and_reloads(trained, tmp_path: Path, family: str, kind: str):
    directory = trained(family, kind)
    body = KINDS[kind][1]()
    detector = load_detector(directory, "cpu")
    assert detector.manifest.family == family
    assert detector.manifest.scoring.method == FAMILIES[family].default_score
    settings = Settings(model_dir=directory, device="cpu", api_token=API_TOKEN, max_batch=50, max_samples=10)
    with TestClient(create_app(settings)) as client:
        scored = client.post("/score", json=body)
        assert scored.status_code == 200, scored.text
        results = [r for r in scored.json()["results"] if r is not None and r.get("score") is not None]
        assert results and all(np.isfinite(r["score"]) for r in results)
        reconstructed = client.post("/reconstruct", json=body)
        assert reconstructed.status_code == 200, reconstructed.text
        encoded = client.post("/encode", json=body)
        assert encoded.status_code == 200, encoded.text
        code = encoded.json()["results"][0]
        assert len(code["mean"]) == detector.network.latent_dim
        assert ("std" in code) == (family not in DETERMINISTIC)
        sampled = client.post("/sample", json={"n": 2, "seed": 1})
        if FAMILIES[family].can_sample:
            assert sampled.status_code == 200, sampled.text
            assert len(sampled.json()["samples"]) == 2
        else:
            assert sampled.status_code == 422, sampled.text
            detail = sampled.json()["detail"][0]
            assert detail["type"] == "cannot_sample"
            assert f"family {family!r} cannot sample" in detail["msg"] and "--family vae" in detail["msg"]
        path = client.post("/interpolate", json={**body, "steps": 3})
        assert path.status_code == 200, path.text
        assert path.json()["t"] == [0.0, 0.5, 1.0] and len(path.json()["points"]) == 3
        thresholds = client.get("/thresholds")
        assert thresholds.status_code == 200 and thresholds.json()["active"] in thresholds.json()["thresholds"]
        detector.save(tmp_path / "copy")
        reload = client.post("/admin/reload", json={"model_dir": str(tmp_path / "copy")}, headers=AUTH)
        assert reload.status_code == 200, reload.text
        rescored = client.post("/score", json=body).json()["results"]
        assert [r["score"] for r in rescored if r is not None and r.get("score") is not None] == pytest.approx(
            [r["score"] for r in results], rel=1e-5
        )
    again = Detector.load(directory, "cpu")
    assert again.manifest.family_config == detector.manifest.family_config
    inputs = again.kind.request_inputs(again.kind.parse_request(body), InputLimits(max_image_pixels=4096))
    assert again.terms(inputs).score.tolist() == pytest.approx([r["score"] for r in results], rel=1e-5)
