"""training.trainer: determinism, the calibration split, early stopping, the summary and the manifest."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest
import torch

from vae_anomaly.model.kinds.tabular.kind import TabularOptions, score_columns, tabular_network_config
from vae_anomaly.model.kinds.tabular.preprocessing import TabularCodec, check_columns
from vae_anomaly.model.scoring import posterior_noise
from vae_anomaly.model.thresholds import threshold_for_fpr
from vae_anomaly.training.data import DataError, split_rows
from vae_anomaly.training.tabular import fit_detector
from vae_anomaly.training.trainer import TrainConfig, _mean_elbo, auto_batch_size


@pytest.fixture(scope="module")
def result(normal_columns, fit_tiny):
    return fit_tiny(normal_columns)


def test_same_seed_same_model(normal_columns, fit_tiny, result):
    again = fit_tiny(normal_columns)
    assert again.detector.manifest.calibration_scores == result.detector.manifest.calibration_scores
    for name, tensor in result.detector.network.state_dict().items():
        assert torch.equal(again.detector.network.state_dict()[name], tensor), name
    other = fit_tiny(normal_columns, seed=1)
    assert other.detector.manifest.calibration_scores != result.detector.manifest.calibration_scores


def test_calibration_rows_are_held_out(normal_columns, result):
    """The calibration scores are exactly the scores of the split's calibration rows, and those rows
    are disjoint from the training and validation rows."""
    detector = result.detector
    config = TrainConfig.model_validate(result.summary["config"])
    split = split_rows(300, config.validation_fraction, config.calibration_fraction, config.seed)
    assert not set(split.calibration) & (set(split.train) | set(split.validation))
    checked = check_columns(detector.kind.schema, normal_columns)
    calibration_rows = {name: values[split.calibration] for name, values in checked.items()}
    scores = detector.terms(calibration_rows).score
    np.testing.assert_allclose(sorted(scores), detector.manifest.calibration_scores, rtol=1e-6)
    assert result.summary["rows"] == {"train": 210, "validation": 30, "calibration": 60}


def test_preprocessing_is_fitted_on_training_rows_only(normal_columns, result):
    config = TrainConfig.model_validate(result.summary["config"])
    split = split_rows(300, config.validation_fraction, config.calibration_fraction, config.seed)
    stats = result.detector.manifest.kind_config.preprocessing.numeric["b"]
    assert stats.center == pytest.approx(np.mean(normal_columns["b"][split.train]))
    assert stats.center != pytest.approx(np.mean(normal_columns["b"]))


def test_thresholds_come_from_the_calibration_scores(result):
    manifest = result.detector.manifest
    calibration = np.array(manifest.calibration_scores)
    assert np.all(np.diff(calibration) >= 0)
    for name, target in {"warn": 0.05, "critical": 0.02}.items():
        assert manifest.thresholds[name].target_fpr == target
        assert manifest.thresholds[name].value == threshold_for_fpr(calibration, target)
    assert manifest.active_threshold == "warn"
    assert result.detector.thresholds.names == ("warn", "critical")


def test_summary_fields(result):
    summary = result.summary
    assert set(summary) == {
        "rows",
        "epochs",
        "best_epoch",
        "train_elbo",
        "validation_elbo",
        "last_epoch",
        "wall_seconds",
        "device",
        "batch_size",
        "world_size",
        "threads",
        "config",
    }
    assert summary["world_size"] == 1  # no torchrun: one process
    assert summary["threads"] == 1  # a tiny MLP: one intra-op thread (model.threads)
    assert summary["batch_size"] == auto_batch_size(210) == 32  # config.batch_size None: automatic
    assert summary["epochs"] == 10 and 1 <= summary["best_epoch"] <= 10
    assert set(summary["last_epoch"]) == {"epoch", "train_recon", "train_kl", "validation_elbo"}
    assert summary["last_epoch"]["epoch"] == summary["epochs"]
    assert summary["last_epoch"]["train_kl"] >= 0
    assert math.isfinite(summary["train_elbo"]) and math.isfinite(summary["validation_elbo"])
    assert summary["validation_elbo"] < 0  # an ELBO of mixed data with discrete parts
    assert summary["wall_seconds"] > 0
    assert summary["device"] == "cpu"
    assert summary["config"]["kind_options"]["hidden_dims"] == [16, 8] and summary["config"]["epochs"] == 10
    assert result.detector.manifest.training == summary


def test_manifest_describes_the_network(result):
    manifest = result.detector.manifest
    assert manifest.kind_config.network.hidden_dims == [16, 8] and manifest.family_config.latent_dim == 2
    assert manifest.kind_config.network.n_numeric == 3 and manifest.kind_config.network.category_sizes == [3]
    assert manifest.kind_config.network.n_boolean == 1
    assert manifest.scoring.method == "elbo" and manifest.scoring.n_samples == 32
    assert [f.type for f in manifest.kind_config.feature_schema.features] == [
        "numeric",
        "numeric",
        "numeric",
        "categorical",
        "boolean",
    ]


def test_early_stopping_stops_and_restores_the_best_epoch(normal_columns):
    config = TrainConfig(
        epochs=300,
        patience=2,
        kl_warmup_epochs=0,
        learning_rate=0.05,
        hidden_dims=[16, 8],
        latent_dim=2,
        device="cpu",
        thresholds={"warn": 0.05},
    )
    out = fit_detector(normal_columns, config, progress=False)
    summary = out.summary
    assert summary["epochs"] < 300
    assert summary["epochs"] == summary["best_epoch"] + config.patience
    assert summary["last_epoch"]["validation_elbo"] <= summary["validation_elbo"]
    # The weights kept are the best epoch's: they reproduce its validation ELBO.
    detector = out.detector
    split = split_rows(300, config.validation_fraction, config.calibration_fraction, config.seed)
    checked = check_columns(detector.kind.schema, normal_columns)
    validation = detector.kind.codec.encode({name: values[split.validation] for name, values in checked.items()})
    noise = posterior_noise(8, 2, config.seed + 1)
    assert _mean_elbo(detector.network, validation, noise, 4096) == pytest.approx(summary["validation_elbo"], rel=1e-6)


def test_no_early_stop_during_kl_warmup(normal_columns):
    config = TrainConfig(
        epochs=12,
        patience=1,
        kl_warmup_epochs=12,
        learning_rate=0.05,
        hidden_dims=[8],
        latent_dim=2,
        device="cpu",
        thresholds={"warn": 0.05},
    )
    summary = fit_detector(normal_columns, config, progress=False).summary
    assert summary["epochs"] == 12 and summary["best_epoch"] == 12


def test_options_reach_the_model(normal_columns, fit_tiny):
    out = fit_tiny(
        normal_columns,
        epochs=2,
        score_method="iwae",
        score_samples=8,
        numeric_variance="sample",
        feature_dropout=0.3,
        dropout=0.1,
        thresholds={"low": 0.1, "high": 0.05},
        active_threshold="high",
    )
    manifest = out.detector.manifest
    assert (manifest.scoring.method, manifest.scoring.n_samples) == ("iwae", 8)
    assert manifest.kind_config.network.numeric_variance == "sample" and manifest.kind_config.network.dropout == 0.1
    assert manifest.active_threshold == "high" and list(manifest.thresholds) == ["low", "high"]
    assert not out.detector.network.training  # returned in eval mode: dropout off when scoring
    assert np.isfinite(manifest.calibration_scores).all()


def test_unknown_active_threshold(normal_columns, fit_tiny):
    with pytest.raises(ValueError, match=r"active threshold 'page' is not among \['critical', 'warn'\]"):
        fit_tiny(normal_columns, epochs=1, active_threshold="page")


def test_too_few_calibration_rows_are_logged(normal_columns, fit_tiny, caplog):
    with caplog.at_level(logging.WARNING, logger="vae_anomaly.training.trainer"):
        fit_tiny(normal_columns, epochs=1, thresholds={"warn": 0.05, "rare": 0.001})
    messages = [r.getMessage() for r in caplog.records if r.name == "vae_anomaly.training.trainer"]
    assert messages == [
        "threshold rare: 60 calibration rows cannot guarantee a 0.001 false-positive rate (needs at least 999); "
        "it is set at the largest calibration score"
    ]


def test_too_few_rows(fit_tiny):
    with pytest.raises(DataError, match="only 10 normal rows"):
        fit_tiny({"x": np.arange(10.0)}, epochs=1)


def test_auto_batch_size():
    assert [auto_batch_size(n) for n in (10, 512, 1600, 8192, 10**6)] == [32, 32, 100, 512, 512]


def test_explicit_batch_size_is_used(normal_columns, fit_tiny):
    assert fit_tiny(normal_columns, epochs=1, batch_size=50).summary["batch_size"] == 50


def test_network_config_defaults(result):
    codec: TabularCodec = result.detector.kind.codec
    sizes = tabular_network_config(codec, TabularOptions())
    assert result.detector.kind.default_latent_dim() == 3  # ceil(5 features / 2)
    assert sizes.input_dim == codec.input_dim == 3 + 3 + 1 + 5
    assert sizes.hidden_dims == [64, 32]  # width at least 64
    assert sizes.n_numeric == 3 and sizes.category_sizes == [3] and sizes.n_boolean == 1
    assert tabular_network_config(codec, TabularOptions(hidden_dims=[5])).hidden_dims == [5]


def test_calibration_scores_use_the_scoring_path(result, normal_columns):
    """Calibration goes through the same `score_columns` the detector uses for new records."""
    detector = result.detector
    checked = check_columns(detector.kind.schema, normal_columns)
    direct = score_columns(detector.network, detector.kind, checked, detector.noise, detector.manifest.scoring).score
    np.testing.assert_allclose(direct, detector.terms(checked).score, rtol=1e-12)
    assert np.isin(np.round(detector.manifest.calibration_scores, 6), np.round(direct, 6)).all()
