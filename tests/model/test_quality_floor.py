"""A quality floor: on seeded correlated Gaussian data the scores separate held-out normal rows from
outliers that keep every marginal but break the correlations, and from rows shifted off the data's
subspace; and the calibrated threshold keeps its false-positive rate on held-out normal rows."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from vae_anomaly.model.detector import Detector

DIMS = 8
LATENT = 2
NOISE = 0.1


def _names() -> list[str]:
    return [f"x{i}" for i in range(DIMS)]


def _columns(rows: np.ndarray) -> dict[str, np.ndarray]:
    return {name: rows[:, i] for i, name in enumerate(_names())}


@pytest.fixture(scope="module")
def weights() -> np.ndarray:
    return np.random.default_rng(100).normal(size=(LATENT, DIMS))


def _normal_rows(weights: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    return rng.normal(size=(n, LATENT)) @ weights + NOISE * rng.normal(size=(n, DIMS))


@pytest.fixture(scope="module")
def correlated_detector(weights: np.ndarray, train_tiny) -> Detector:
    rows = _normal_rows(weights, 1500, np.random.default_rng(101))
    return train_tiny(
        _columns(rows), epochs=40, hidden_dims=[32, 16], latent_dim=LATENT, thresholds={"warn": 0.01}
    ).detector


def _scores(detector: Detector, rows: np.ndarray) -> np.ndarray:
    return detector.score(detector.kind.columns_from_table(_columns(rows))).terms.score


def _auroc(normal: np.ndarray, outliers: np.ndarray) -> float:
    labels = np.r_[np.zeros(normal.size), np.ones(outliers.size)]
    return float(roc_auc_score(labels, np.r_[normal, outliers]))


def test_auroc_on_correlation_breaking_outliers(correlated_detector: Detector, weights: np.ndarray):
    rng = np.random.default_rng(102)
    normal = _normal_rows(weights, 500, rng)
    # Each column shuffled on its own: exactly the normal marginals, none of the dependence.
    source = _normal_rows(weights, 500, rng)
    outliers = np.stack([rng.permutation(source[:, j]) for j in range(DIMS)], axis=1)
    normal_scores, outlier_scores = _scores(correlated_detector, normal), _scores(correlated_detector, outliers)
    assert _auroc(normal_scores, outlier_scores) >= 0.9


def test_auroc_on_shifted_outliers(correlated_detector: Detector, weights: np.ndarray):
    rng = np.random.default_rng(103)
    normal = _normal_rows(weights, 500, rng)
    # Move rows off the 2-d subspace spanned by the weights by 0.5 (5 noise sds): close enough that an
    # under-trained model (20 epochs here) falls below the floor, while 40 epochs reach about 0.99.
    _, _, vt = np.linalg.svd(weights)
    off_subspace = vt[LATENT:]  # (DIMS - LATENT, DIMS), orthonormal, orthogonal to the weights' rows
    directions = rng.normal(size=(500, DIMS - LATENT)) @ off_subspace
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    outliers = _normal_rows(weights, 500, rng) + 0.5 * directions
    assert _auroc(_scores(correlated_detector, normal), _scores(correlated_detector, outliers)) >= 0.9


def test_held_out_false_positive_rate_near_target(correlated_detector: Detector, weights: np.ndarray):
    scored = correlated_detector.score(
        correlated_detector.kind.columns_from_table(_columns(_normal_rows(weights, 3000, np.random.default_rng(104))))
    )
    n_calibration = len(correlated_detector.manifest.calibration_scores)
    assert n_calibration == 300  # 20% of 1500
    # Expected rate (n + 1 - k) / (n + 1) ≈ 0.01; allow for the one calibration draw's luck.
    assert scored.exceeded[:, 0].mean() <= 0.035
    assert np.mean(scored.p_value <= 0.5) == pytest.approx(0.5, abs=0.1)
