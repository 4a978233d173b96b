"""The image CVAE end to end: trained from a folder whose sub-folders are the labels, the label as
its condition; scored and served with `labels` beside the images, sampled given a label, 422s
naming absent or unknown labels, reloaded with identical scores."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from tests.conftest import API_TOKEN, make_bar_images, one_thread
from vae_anomaly.model.detector import Detector
from vae_anomaly.service.app import create_app
from vae_anomaly.service.settings import Settings
from vae_anomaly.training.cli import main

AUTH = {"Authorization": f"Bearer {API_TOKEN}"}


def bars(n: int, seed: int, label: str) -> np.ndarray:
    """Vertical bars ("v") or the same bars turned horizontal ("h"), uint8 (n, 8, 8)."""
    images = make_bar_images(n, seed=seed)
    return images if label == "v" else np.transpose(images, (0, 2, 1)).copy()


@pytest.fixture(scope="module")
def image_cvae_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Trained by the CLI on a folder with sub-folders h/ and v/: the sub-folder is the label."""
    root = tmp_path_factory.mktemp("bars")
    for label in ("h", "v"):
        (root / label).mkdir()
        for i, image in enumerate(bars(150, seed=ord(label), label=label)):
            Image.fromarray(image, mode="L").save(root / label / f"{i}.png")
    model = tmp_path_factory.mktemp("artifact") / "image-cvae"
    argv = ["train", str(root), "--out", str(model), "--family", "cvae", "--epochs", "20", "--latent-dim", "2"]
    with one_thread():
        assert main([*argv, "--quiet", "--model-version", "img-cvae-1"]) == 0
    return model


@pytest.fixture
def image_cvae_client(image_cvae_dir: Path) -> Iterator[TestClient]:
    settings = Settings(model_dir=image_cvae_dir, device="cpu", api_token=API_TOKEN, max_batch=20)
    with TestClient(create_app(settings)) as client:
        yield client


def test_the_label_is_the_condition_recorded_in_the_manifest(image_cvae_dir: Path):
    detector = Detector.load(image_cvae_dir, "cpu")
    assert detector.manifest.family == "cvae"
    condition = detector.kind.condition_spec()
    assert condition is not None and condition.variables[0].name == "label"
    assert condition.variables[0].values == ["h", "v"]


def test_an_image_that_does_not_fit_its_label_scores_higher(image_cvae_client: TestClient):
    vertical = bars(4, seed=99, label="v")
    arrays = [image.tolist() for image in vertical]
    fitting = image_cvae_client.post("/score", json={"arrays": arrays, "labels": ["v"] * 4})
    wrong = image_cvae_client.post("/score", json={"arrays": arrays, "labels": ["h"] * 4})
    assert fitting.status_code == wrong.status_code == 200, fitting.text
    fitting_scores = [r["score"] for r in fitting.json()["results"]]
    wrong_scores = [r["score"] for r in wrong.json()["results"]]
    assert min(wrong_scores) > max(fitting_scores)
    assert all(r["top_regions"] for r in wrong.json()["results"])
    reconstructed = image_cvae_client.post("/reconstruct", json={"arrays": arrays[:1], "labels": ["v"]})
    assert reconstructed.status_code == 200 and reconstructed.json()["results"][0]["heatmap"]


@pytest.mark.parametrize(
    ("extra", "loc", "words"),
    [
        ({}, ["body", "labels"], "needs each image's label"),
        ({"labels": ["v", "d"]}, ["body", "labels", 1], "unknown condition value 'd'"),
        ({"labels": ["v"]}, ["body", "labels"], "one label per image"),
    ],
)
def test_absent_or_unknown_labels_get_a_422_naming_them(image_cvae_client: TestClient, extra, loc, words):
    arrays = [image.tolist() for image in bars(2, seed=5, label="v")]
    response = image_cvae_client.post("/score", json={"arrays": arrays, **extra})
    assert response.status_code == 422
    item = response.json()["detail"][0]
    assert item["loc"] == loc and words in item["msg"]


def test_sample_given_a_label_draws_that_label(image_cvae_client: TestClient):
    def orientation(samples: list[str]) -> float:
        """Mean spread of column sums minus that of row sums: > 0 for vertical bars."""
        images = np.stack([np.asarray(Image.open(io.BytesIO(base64.b64decode(s))), dtype=np.float64) for s in samples])
        return float(np.mean(images.sum(axis=1).std(axis=1) - images.sum(axis=2).std(axis=1)))

    vertical = image_cvae_client.post("/sample", json={"n": 16, "seed": 1, "condition": "v"})
    horizontal = image_cvae_client.post("/sample", json={"n": 16, "seed": 1, "condition": {"label": "h"}})
    assert vertical.status_code == horizontal.status_code == 200, vertical.text
    assert orientation(vertical.json()["samples"]) > 0 > orientation(horizontal.json()["samples"])
    grid = image_cvae_client.post("/sample", json={"n": 4, "grid": True, "condition": "h"})
    assert grid.status_code == 200 and grid.json()["grid"]
    absent = image_cvae_client.post("/sample", json={"n": 4})
    assert absent.status_code == 422 and absent.json()["detail"][0]["loc"] == ["body", "condition"]
    unknown = image_cvae_client.post("/sample", json={"n": 4, "condition": "d"})
    assert unknown.status_code == 422 and "unknown condition value 'd'" in unknown.json()["detail"][0]["msg"]


def test_an_unconditional_image_model_refuses_labels(tiny_image_model_dir: Path):
    settings = Settings(model_dir=tiny_image_model_dir, device="cpu", api_token=API_TOKEN)
    with TestClient(create_app(settings)) as client:
        response = client.post("/score", json={"arrays": [bars(1, 0, "v")[0].tolist()], "labels": ["v"]})
    assert response.status_code == 422 and response.json()["detail"][0]["loc"] == ["body", "labels"]


def test_reload_and_the_cli_give_the_same_scores(image_cvae_dir: Path, tmp_path: Path, capsys):
    arrays = [image.tolist() for image in bars(3, seed=7, label="h")]
    body = {"arrays": arrays, "labels": ["h", "v", "h"]}
    settings = Settings(model_dir=image_cvae_dir, device="cpu", api_token=API_TOKEN)
    Detector.load(image_cvae_dir, "cpu").save(tmp_path / "copy")
    with TestClient(create_app(settings)) as client:
        before = [r["score"] for r in client.post("/score", json=body).json()["results"]]
        reload = client.post("/admin/reload", json={"model_dir": str(tmp_path / "copy")}, headers=AUTH)
        assert reload.status_code == 200, reload.text
        after = [r["score"] for r in client.post("/score", json=body).json()["results"]]
    assert after == pytest.approx(before)
    data = tmp_path / "test.npz"
    np.savez(data, X=np.asarray(arrays, dtype=np.uint8), y=np.array(["h", "v", "h"]))
    capsys.readouterr()
    assert main(["score", str(image_cvae_dir), str(data)]) == 0
    import json

    scored = [json.loads(line)["score"] for line in capsys.readouterr().out.splitlines()]
    assert scored == pytest.approx(before, rel=1e-5)


def test_cvae_training_needs_labels(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    data = tmp_path / "unlabelled.npz"
    np.savez(data, X=make_bar_images(20))
    assert main(["train", str(data), "--out", str(tmp_path / "m"), "--family", "cvae", "--epochs", "1"]) == 2
    assert "conditioned on the image's label" in capsys.readouterr().err


def test_evaluate_reads_the_labels_as_conditions_and_the_anomalies_from_a_file(
    image_cvae_dir: Path, tmp_path: Path, capsys
):
    """Vertical bars labelled "v" are normal; the same bars labelled "h" (an image that does not fit
    its label) are the anomalies, which only the condition can tell."""
    import json

    vertical = bars(20, seed=11, label="v")
    data = tmp_path / "contextual.npz"
    np.savez(data, X=np.concatenate([vertical, vertical]), y=np.array(["v"] * 20 + ["h"] * 20))
    flags = tmp_path / "anomalies.txt"
    flags.write_text("\n".join(["0"] * 20 + ["1"] * 20) + "\n")
    report = tmp_path / "report"
    capsys.readouterr()
    argv = ["evaluate", str(image_cvae_dir), str(data), "--anomalies", str(flags), "--report", str(report)]
    assert main(argv) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["anomalies"] == 20 and metrics["auroc"] > 0.9
    assert (report / "samples.png").is_file() and (report / "latent.png").is_file()
    np.save(tmp_path / "anomalies.npy", np.array([0] * 20 + [1] * 20))
    assert main(["evaluate", str(image_cvae_dir), str(data), "--anomalies", str(tmp_path / "anomalies.npy")]) == 0
    assert json.loads(capsys.readouterr().out)["auroc"] == pytest.approx(metrics["auroc"])


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        ([], "say which images are anomalous with --anomalies FILE"),
        (["--anomalies", "short"], "3 values for 4 images"),
        (["--anomalies", "twos"], "values must be 0 (normal) or 1 (anomalous)"),
        (["--anomalies", "short", "--normal-value", "v"], "--normal-value: a conditional model's labels"),
    ],
)
def test_evaluate_of_a_conditional_model_refuses_what_it_cannot_read(
    image_cvae_dir: Path, tmp_path: Path, capsys, extra, words
):
    data = tmp_path / "test.npz"
    np.savez(data, X=bars(4, seed=3, label="v"), y=np.array(["v", "v", "h", "h"]))
    (tmp_path / "short").write_text("0\n0\n1\n")
    (tmp_path / "twos").write_text("0\n2\n1\n1\n")
    extra = [str(tmp_path / e) if e in ("short", "twos") else e for e in extra]
    capsys.readouterr()
    assert main(["evaluate", str(image_cvae_dir), str(data), *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and words in err and "Traceback" not in err


def test_evaluate_of_an_unconditional_model_refuses_anomalies(tiny_image_model_dir: Path, tmp_path: Path, capsys):
    data = tmp_path / "test.npz"
    np.savez(data, X=make_bar_images(4), y=np.array([0, 0, 1, 1]))
    (tmp_path / "flags.txt").write_text("0\n0\n1\n1\n")
    capsys.readouterr()
    assert main(["evaluate", str(tiny_image_model_dir), str(data), "--anomalies", str(tmp_path / "flags.txt")]) == 2
    assert "--anomalies is for conditional image models" in capsys.readouterr().err


def test_encode_and_interpolate_run_given_the_labels(image_cvae_client: TestClient):
    arrays = [bars(1, seed=21, label="v")[0].tolist(), bars(1, seed=22, label="h")[0].tolist()]
    encoded = image_cvae_client.post("/encode", json={"arrays": arrays, "labels": ["v", "h"]})
    assert encoded.status_code == 200, encoded.text
    assert all(len(r["mean"]) == 2 and len(r["std"]) == 2 for r in encoded.json()["results"])
    path = image_cvae_client.post("/interpolate", json={"arrays": arrays, "labels": ["v", "h"], "steps": 4})
    assert path.status_code == 200, path.text
    points = path.json()["points"]
    assert len(points) == 4 and all(Image.open(io.BytesIO(base64.b64decode(p))).size == (8, 8) for p in points)
    unlabelled = image_cvae_client.post("/interpolate", json={"arrays": arrays, "steps": 4})
    assert unlabelled.status_code == 422 and unlabelled.json()["detail"][0]["loc"] == ["body", "labels"]
