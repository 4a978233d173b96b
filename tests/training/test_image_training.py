"""Training an image model: it learns the normal images, saves and loads like a tabular model, scores
deterministically whatever the batch, and the CLI reads IDX, .npz and image folders."""

from __future__ import annotations

import gzip
import json
import struct
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from tests.conftest import make_bar_images
from vae_anomaly.model.detector import Detector
from vae_anomaly.model.families.vae import VAE, VAEConfig, reparameterize
from vae_anomaly.model.kinds.image.backbone import image_network_config
from vae_anomaly.model.kinds.image.images import ImageInputs, ImageSpec
from vae_anomaly.model.kinds.image.kind import ImageKind
from vae_anomaly.training.cli import main
from vae_anomaly.training.data import DataError
from vae_anomaly.training.image_data import is_image_source, read_idx, read_images


def load(directory: Path) -> Detector:
    detector = Detector.load(directory, "cpu")
    assert isinstance(detector.kind, ImageKind)
    return detector


def inputs(pixels: np.ndarray) -> ImageInputs:
    batch = pixels[:, None].astype(np.float32) / 255.0
    return ImageInputs(batch, [image.shape for image in batch])


def horizontal_bars(n: int) -> np.ndarray:
    images = np.zeros((n, 8, 8), dtype=np.uint8)
    images[np.arange(n), np.arange(n) % 6 + 1, :] = 255
    return images


def test_tiny_image_model_separates_normal_from_anomalous_images(tiny_image_model_dir: Path):
    detector = load(tiny_image_model_dir)
    normal = detector.score(inputs(make_bar_images(50, seed=9))).terms.score
    anomalous = detector.score(inputs(horizontal_bars(50))).terms.score
    assert np.median(anomalous) > np.quantile(normal, 0.95)


def test_manifest_records_kind_geometry_and_baseline(tiny_image_model_dir: Path):
    manifest = json.loads((tiny_image_model_dir / "manifest.json").read_text())
    assert manifest["kind"] == "image"
    assert manifest["kind_config"]["image"] == {"height": 8, "width": 8, "channels": 1, "resize": False}
    assert len(manifest["kind_config"]["pixel_baseline"]["mean"]) == 64
    assert manifest["kind_config"]["network"]["likelihood"] == "gaussian"


def test_scores_do_not_depend_on_batch_composition_or_position(tiny_image_model_dir: Path):
    detector = load(tiny_image_model_dir)
    images = np.concatenate([make_bar_images(20, seed=4), horizontal_bars(20)])
    together = detector.score(inputs(images)).terms.score
    alone = np.array([detector.score(inputs(images[i : i + 1])).terms.score[0] for i in range(len(images))])
    reversed_order = detector.score(inputs(images[::-1])).terms.score[::-1]
    np.testing.assert_allclose(alone, together, rtol=1e-5)
    np.testing.assert_allclose(reversed_order, together, rtol=1e-5)


def test_saved_model_scores_like_the_trained_one(tiny_image_model_dir: Path, tmp_path: Path):
    detector = load(tiny_image_model_dir)
    detector.save(tmp_path / "copy")
    again = load(tmp_path / "copy")
    batch = inputs(make_bar_images(10, seed=5))
    np.testing.assert_array_equal(detector.score(batch).terms.score, again.score(batch).terms.score)


@pytest.mark.parametrize(("channels", "height", "width"), [(1, 30, 20), (3, 64, 64), (1, 5, 9)])
def test_decoder_output_matches_any_input_size(channels: int, height: int, width: int):
    spec = ImageSpec(height=height, width=width, channels=channels)
    vae = VAE.build(ImageKind.untrained(spec, image_network_config(channels, height, width)), VAEConfig(latent_dim=16))
    x = torch.rand(2, channels, height, width)
    mu, logvar = vae.encode(x)
    decoded = vae.decode(reparameterize(mu, logvar, torch.zeros(3, 1, mu.shape[-1])))
    assert decoded.out.shape == (3, 2, channels, height, width)


def write_idx(path: Path, array: np.ndarray) -> None:
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as handle:
        handle.write(header + array.astype(np.uint8).tobytes())


def test_idx_files_round_trip_with_labels_found_beside_them(tmp_path: Path):
    images = make_bar_images(12)
    labels = np.arange(12) % 3
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", images)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", labels)
    read = read_images(tmp_path / "train-images-idx3-ubyte.gz")
    np.testing.assert_array_equal(read.pixels[:, 0], images)
    assert read.labels is not None
    np.testing.assert_array_equal(read.labels, labels)
    assert is_image_source(tmp_path / "train-images-idx3-ubyte.gz")


def test_truncated_or_foreign_idx_is_a_data_error(tmp_path: Path):
    (tmp_path / "bad.idx").write_bytes(b"\x00\x00\x08\x03\x00\x00\x00\x09")
    with pytest.raises(DataError, match="truncated"):
        read_idx(tmp_path / "bad.idx")
    (tmp_path / "foreign.idx").write_bytes(b"PK\x03\x04 not an idx")
    with pytest.raises(DataError, match="magic"):
        read_idx(tmp_path / "foreign.idx")


def test_folder_of_pngs_with_label_subfolders(tmp_path: Path):
    for label, pixels in (("normal", make_bar_images(3)), ("defect", horizontal_bars(2))):
        (tmp_path / label).mkdir()
        for i, image in enumerate(pixels):
            Image.fromarray(image, mode="L").save(tmp_path / label / f"{i}.png")
    read = read_images(tmp_path)
    assert read.pixels.shape == (5, 1, 8, 8)
    assert read.labels is not None and sorted(read.labels.tolist()) == ["defect"] * 2 + ["normal"] * 3
    (tmp_path / "normal" / "big.png").write_bytes(b"")
    Image.fromarray(np.zeros((9, 9), dtype=np.uint8), mode="L").save(tmp_path / "normal" / "big.png")
    with pytest.raises(DataError, match="--resize"):
        read_images(tmp_path)
    assert read_images(tmp_path, size=(8, 8)).pixels.shape == (6, 1, 8, 8)


def test_cli_trains_scores_and_evaluates_images(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    images = np.concatenate([make_bar_images(200), horizontal_bars(40)])
    labels = np.array([0] * 200 + [1] * 40)
    data = tmp_path / "bars.npz"
    np.savez(data, X=images, y=labels)
    model = tmp_path / "model"
    assert main(["train", str(data), "--out", str(model), "--epochs", "8", "--quiet", "--latent-dim", "4"]) == 0
    assert "image model" in capsys.readouterr().out
    out = tmp_path / "scores.jsonl"
    assert main(["score", str(model), str(data), "--out", str(out), "--explain", "2"]) == 0
    results = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(results) == 240 and len(results[0]["top_regions"]) == 2
    report = tmp_path / "report"
    assert main(["evaluate", str(model), str(data), "--report", str(report)]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["auroc"] > 0.9
    for name in ("extremes.png", "samples.png", "latent.png", "report.md", "roc.png"):
        assert (report / name).is_file()
    assert "extremes.png" in (report / "report.md").read_text()


def test_cli_resize_trains_at_the_requested_size(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    data = tmp_path / "bars.npz"
    np.savez(data, X=make_bar_images(120))
    model = tmp_path / "model"
    assert main(["train", str(data), "--out", str(model), "--epochs", "2", "--quiet", "--resize", "6x6"]) == 0
    assert load(model).kind.spec.model_dump() == {"height": 6, "width": 6, "channels": 1, "resize": True}


def test_image_score_results_carry_file_and_index_and_csv_has_the_scalars(
    tiny_image_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    folder = tmp_path / "images"
    folder.mkdir()
    for i, image in enumerate([*make_bar_images(2), *horizontal_bars(1)]):
        Image.fromarray(image, mode="L").save(folder / f"img{i}.png")
    assert main(["score", str(tiny_image_model_dir), str(folder), "--device", "cpu"]) == 0
    results = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["index"], r["file"]) for r in results] == [(0, "img0.png"), (1, "img1.png"), (2, "img2.png")]
    out = tmp_path / "scores.csv"
    assert main(["score", str(tiny_image_model_dir), str(folder), "--out", str(out), "--device", "cpu"]) == 0
    frame = pd.read_csv(out)
    assert frame.columns.tolist()[:3] == ["index", "file", "score"]
    assert frame["file"].tolist() == ["img0.png", "img1.png", "img2.png"]
    np.testing.assert_allclose(frame["score"], [r["score"] for r in results], rtol=1e-6)
    assert json.loads(frame["top_regions"][0]) == results[0]["top_regions"]
    npz = tmp_path / "bars.npz"
    np.savez(npz, X=make_bar_images(2))
    assert main(["score", str(tiny_image_model_dir), str(npz), "--device", "cpu"]) == 0
    results = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["index"] for r in results] == [0, 1] and "file" not in results[0]


def test_feature_dropout_is_applied_to_image_models():
    """Issue 14 item 7: --feature-dropout once left image weights identical while the manifest said 0.3."""
    from vae_anomaly.training.image_trainer import fit_image_detector, image_train_config

    pixels = make_bar_images(120)[:, None].astype(np.float32) / 255.0
    spec = ImageSpec(height=8, width=8, channels=1, resize=False)
    weights = []
    for rate in (0.0, 0.3):
        config = image_train_config(epochs=2, feature_dropout=rate, device="cpu", seed=0, latent_dim=2)
        detector = fit_image_detector(pixels, spec, config, progress=False).detector
        assert detector.manifest.family_config.model_dump()["feature_dropout"] == rate
        weights.append(torch.cat([p.detach().flatten() for p in detector.network.parameters()]))
    assert not torch.equal(weights[0], weights[1])


def test_image_evaluate_holdout_scores_only_the_images_training_left_out(tmp_path: Path, capsys):
    images = np.concatenate([make_bar_images(120), horizontal_bars(40)])
    labels = np.array([0] * 120 + [1] * 40)
    order = np.random.default_rng(0).permutation(len(images))
    data = tmp_path / "bars.npz"
    np.savez(data, X=images[order], y=labels[order])
    model = tmp_path / "model"
    argv = ["train", str(data), "--out", str(model), "--epochs", "1", "--quiet", "--holdout", "0.25"]
    assert main(argv) == 0
    capsys.readouterr()
    assert main(["evaluate", str(model), str(data), "--holdout", "0.25", "--device", "cpu"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["rows"] == 40 and metrics["anomalies"] == int(labels[order][120:].sum())
    trained = load(model).manifest.training["rows"]
    used = sum(trained[part] for part in ("train", "validation", "calibration"))
    assert used == int((labels[order][:120] == 0).sum())


def test_image_report_panel_is_scaled_up_and_labelled():
    """Issue 14 item 9: the extremes panel was 62×82 px with no labels."""
    from vae_anomaly.training.image_report import EXTREMES_COLUMNS, HEADER_HEIGHT, PANEL_MIN_WIDTH, labelled_panel

    grid = np.full((1, 82, 62), 0.5, dtype=np.float32)
    panel = labelled_panel(grid, EXTREMES_COLUMNS, "most anomalous | least anomalous")
    assert panel.width >= PANEL_MIN_WIDTH and panel.width % 62 == 0
    assert panel.height == HEADER_HEIGHT + 82 * (panel.width // 62)
    header = np.asarray(panel)[:HEADER_HEIGHT]
    assert (header < 100).any(), "column names are drawn in the header"
