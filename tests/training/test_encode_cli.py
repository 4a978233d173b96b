"""`vae-anomaly encode` (tabular, images, sensor streams; .npz, .parquet, .csv) and the latent view
of `evaluate --report` (z itself, PCA, 1-D histograms, colour groups)."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib.image
import numpy as np
import pandas as pd
import pytest

from tests.conftest import make_bar_images
from vae_anomaly.model.detector import Detector
from vae_anomaly.model.latent import LatentCode
from vae_anomaly.training.cli import main
from vae_anomaly.training.data import read_table
from vae_anomaly.training.latent_report import MAX_GROUPS, latent_groups, latent_plot, project_2d

TRAIN = ["--epochs", "4", "--quiet", "--device", "cpu", "--threshold", "warn=0.05"]


@pytest.fixture(scope="module")
def tabular_model(labelled_csv: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("encode") / "model"
    argv = ["train", labelled_csv, "--out", directory, "--label-column", "label", "--latent-dim", "3", *TRAIN]
    assert main([str(a) for a in argv]) == 0
    return directory


def direct_code(model: Path, data: Path):
    detector = Detector.load(model, "cpu")
    table = read_table(data, "label", schema=detector.kind.schema)
    return detector.encode(detector.kind.columns_from_table(table.columns)), table.labels


def test_encode_tabular_to_parquet_and_npz(tabular_model: Path, labelled_csv: Path, tmp_path: Path, capsys):
    code, labels = direct_code(tabular_model, labelled_csv)
    parquet = tmp_path / "latent.parquet"
    argv = ["encode", str(tabular_model), str(labelled_csv), "--out", str(parquet), "--label-column", "label"]
    assert main([*argv, "--device", "cpu"]) == 0
    assert capsys.readouterr().err == f"330 rows encoded, latent dim 3, mean and std → {parquet}\n"
    frame = pd.read_parquet(parquet)
    assert list(frame.columns) == ["mean_0", "mean_1", "mean_2", "std_0", "std_1", "std_2", "label"]
    np.testing.assert_allclose(frame[["mean_0", "mean_1", "mean_2"]].to_numpy(), code.mean, rtol=1e-6)
    np.testing.assert_allclose(frame[["std_0", "std_1", "std_2"]].to_numpy(), code.std, rtol=1e-6)
    assert frame["label"].tolist() == labels.tolist()
    npz = tmp_path / "latent.npz"
    assert main(["encode", str(tabular_model), str(labelled_csv), "--out", str(npz), "--device", "cpu"]) == 0
    with np.load(npz) as arrays:
        assert sorted(arrays) == ["mean", "std"]  # no label column named: no y
        np.testing.assert_allclose(arrays["mean"], code.mean, rtol=1e-6)
        assert arrays["mean"].dtype == np.float64


def test_encode_without_a_posterior_writes_the_code_only(
    tabular_model: Path, labelled_csv: Path, tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
):
    network = type(Detector.load(tabular_model, "cpu").network)
    with_std = network.latent_code
    monkeypatch.setattr(network, "latent_code", lambda self, batch: LatentCode(with_std(self, batch).mean))
    out = tmp_path / "latent.parquet"
    assert main(["encode", str(tabular_model), str(labelled_csv), "--out", str(out), "--device", "cpu"]) == 0
    assert "code only (family 'vae' has no posterior)" in capsys.readouterr().err
    assert list(pd.read_parquet(out).columns) == ["mean_0", "mean_1", "mean_2"]
    npz = tmp_path / "latent.npz"
    assert main(["encode", str(tabular_model), str(labelled_csv), "--out", str(npz), "--device", "cpu"]) == 0
    with np.load(npz) as arrays:
        assert sorted(arrays) == ["mean"]


def test_encode_refuses_other_outputs_and_bad_files(tabular_model: Path, labelled_csv: Path, tmp_path: Path, capsys):
    assert main(["encode", str(tabular_model), str(labelled_csv), "--out", str(tmp_path / "z.json")]) == 2
    assert "--out must end in .npz, .parquet, .csv" in capsys.readouterr().err
    frame = pd.read_csv(labelled_csv).drop(columns=["b"])
    bad = tmp_path / "bad.csv"
    frame.to_csv(bad, index=False)
    assert main(["encode", str(tabular_model), str(bad), "--out", str(tmp_path / "z.npz"), "--device", "cpu"]) == 2
    assert "columns b: column is absent from the data" in capsys.readouterr().err
    assert not (tmp_path / "z.npz").exists()


def test_encode_images_keeps_the_labels(tmp_path: Path, capsys):
    images = make_bar_images(120)
    data = tmp_path / "bars.npz"
    np.savez(data, X=images, y=np.arange(120) % 3)
    model = tmp_path / "model"
    assert main(["train", str(data), "--out", str(model), "--epochs", "2", "--quiet", "--latent-dim", "2"]) == 0
    out = tmp_path / "latent.npz"
    capsys.readouterr()
    assert main(["encode", str(model), str(data), "--out", str(out), "--device", "cpu"]) == 0
    assert "120 images encoded, latent dim 2, mean and std" in capsys.readouterr().err
    detector = Detector.load(model, "cpu")
    expected = detector.encode(detector.kind.inputs_from_array(images[:, None]))
    with np.load(out) as arrays:
        np.testing.assert_allclose(arrays["mean"], expected.mean, rtol=1e-5, atol=1e-6)
        assert arrays["std"].shape == (120, 2) and arrays["y"].tolist() == (np.arange(120) % 3).tolist()


def test_encode_a_sensor_stream_gives_the_row_closing_each_window(tmp_path: Path, capsys):
    rng = np.random.default_rng(0)
    t = np.arange(150)
    frame = pd.DataFrame({"time": t, "p": np.sin(t / 4) + 0.05 * rng.normal(size=150), "q": np.cos(t / 4)})
    data = tmp_path / "stream.csv"
    frame.to_csv(data, index=False)
    model = tmp_path / "model"
    argv = ["train", str(data), "--out", str(model), "--time-column", "time", "--window", "5", "--epochs", "2"]
    assert main([*argv, "--quiet", "--device", "cpu"]) == 0
    shuffled = tmp_path / "shuffled.csv"
    frame.iloc[::-1].to_csv(shuffled, index=False)  # rows in reverse: the time column orders them
    out = tmp_path / "latent.csv"
    assert main(["encode", str(model), str(shuffled), "--out", str(out), "--device", "cpu"]) == 0
    written = pd.read_csv(out)
    # Window k closes at time 4 + k, which is file row 149 - (4 + k) of the reversed file.
    assert written["row"].tolist() == [149 - (4 + k) for k in range(146)]
    detector = Detector.load(model, "cpu")
    inputs = detector.kind.inputs_from_rows(frame[["p", "q"]].to_numpy())
    means = written[[c for c in written.columns if c.startswith("mean_")]].to_numpy()
    np.testing.assert_allclose(means, detector.encode(inputs).mean, rtol=1e-5, atol=1e-6)


def test_report_pca_for_wider_codes(tabular_model: Path, labelled_csv: Path, tmp_path: Path, capsys):
    report = tmp_path / "report"
    argv = ["evaluate", str(tabular_model), str(labelled_csv), "--label-column", "label", "--device", "cpu"]
    assert main([*argv, "--report", str(report)]) == 0
    assert "latent.png" in {Path(p).name for p in json.loads(capsys.readouterr().out)["report"]}
    text = (report / "report.md").read_text()
    assert "3-D code, projected on the first two principal components of the normal inputs' codes" in text
    assert matplotlib.image.imread(report / "latent.png").shape[2] in (3, 4)


def test_project_2d_keeps_the_largest_variance_directions():
    rng = np.random.default_rng(0)
    latent = np.stack([10 * rng.normal(size=500), rng.normal(size=500), 0.01 * rng.normal(size=500)], 1)
    coordinates, labels = project_2d(latent)
    assert coordinates.shape == (500, 2) and labels[0].startswith("PC 1 (99 %")
    assert abs(np.corrcoef(coordinates[:, 0], latent[:, 0])[0, 1]) > 0.99
    same, names = project_2d(latent[:, :2])
    assert names == ("z1", "z2") and same is not None and np.array_equal(same, latent[:, :2])


def test_project_2d_fits_the_components_on_the_normal_codes():
    rng = np.random.default_rng(1)
    normal = np.stack([3 * rng.normal(size=300), rng.normal(size=300), 0.1 * rng.normal(size=300)], 1)
    far = np.zeros((10, 3))
    far[:, 2] = 500.0  # a few anomalies far out along the direction normal codes barely use
    latent = np.concatenate([normal, far])
    mask = np.r_[np.ones(300, bool), np.zeros(10, bool)]
    fitted, _ = project_2d(latent, mask)
    assert abs(np.corrcoef(fitted[:300, 0], normal[:, 0])[0, 1]) > 0.99  # PC 1 is the normal spread
    unfitted, _ = project_2d(latent)
    assert abs(np.corrcoef(unfitted[:, 0], latent[:, 2])[0, 1]) > 0.99  # without: the anomalies claim it


def test_latent_groups_fall_back_to_normal_and_anomaly_for_many_labels():
    raw = np.arange(MAX_GROUPS + 5)
    anomalies = (raw > 3).astype(int)
    assert set(latent_groups(raw, anomalies).tolist()) == {"normal", "anomaly"}
    few = np.array([0, 1, 1, 0])
    assert latent_groups(few, few).tolist() == ["0", "1", "1", "0"]


def test_latent_plot_of_a_1d_code_is_a_histogram(tmp_path: Path):
    how = latent_plot(tmp_path / "z.png", np.linspace(-1, 1, 40)[:, None], np.array(["a", "b"] * 20), "t")
    assert how == "The code is 1-D: one histogram of z1 per label."
    assert (tmp_path / "z.png").read_bytes()[:4] == b"\x89PNG"
