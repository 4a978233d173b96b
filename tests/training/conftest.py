"""Fixtures of the training tests: a small labelled mixed-type table (as columns, CSV and NPZ) and
the tiny training configuration.

Helpers are handed out as fixtures (not imported from here), so the tests work in any import mode.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.conftest import one_thread
from vae_anomaly.training.tabular import fit_detector
from vae_anomaly.training.trainer import TrainConfig

LABEL = "label"


def make_frame(n_normal: int, n_anomalies: int, seed: int, holes: float = 0.0) -> pd.DataFrame:
    """Normal rows (label 0) with a numeric pair b ≈ 3a, a count, a category tied to a and a flag;
    anomalies (label 1) break the b ≈ 3a relation. Rows are shuffled; `holes` of a, color and flag
    are missing."""
    rng = np.random.default_rng(seed)
    n = n_normal + n_anomalies
    a = rng.normal(10.0, 2.0, n)
    b = 3.0 * a + rng.normal(0.0, 0.5, n)
    b[n_normal:] = 3.0 * a[n_normal:] + rng.choice([-1.0, 1.0], n_anomalies) * rng.uniform(8.0, 15.0, n_anomalies)
    frame = pd.DataFrame(
        {
            "a": a,
            "b": b,
            "items": rng.poisson(3.0, n) + 1,
            "color": np.where(a > 10.0, "red", rng.choice(["green", "blue"], n)),
            "flag": (b > 30.0) ^ (rng.random(n) < 0.1),
            LABEL: np.r_[np.zeros(n_normal, dtype=int), np.ones(n_anomalies, dtype=int)],
        }
    )
    frame = frame.sample(frac=1.0, random_state=seed).reset_index(drop=True)
    if holes:
        for column in ["a", "color", "flag"]:
            frame[column] = frame[column].astype(object).where(rng.random(n) >= holes, None)
    return frame


def tiny_config(**changes: object) -> TrainConfig:
    fields: dict[str, object] = {
        "epochs": 10,
        "hidden_dims": [16, 8],
        "latent_dim": 2,
        "kl_warmup_epochs": 2,
        "device": "cpu",
        "thresholds": {"warn": 0.05, "critical": 0.02},
        "seed": 0,
    }
    fields.update(changes)
    return TrainConfig(**fields)


@pytest.fixture(scope="session")
def normal_columns() -> dict[str, np.ndarray]:
    """300 normal rows as training columns (no label)."""
    frame = make_frame(300, 0, seed=0).drop(columns=LABEL)
    return {name: frame[name].to_numpy() for name in frame.columns}


@pytest.fixture(scope="session")
def fit_tiny():
    """`fit_tiny(columns, **config_changes)` → `TrainResult`."""

    def fit(columns: dict[str, np.ndarray], **changes: object):
        with one_thread():
            return fit_detector(columns, tiny_config(**changes), progress=False)

    return fit


@pytest.fixture(scope="session")
def labelled_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """300 normal and 30 anomalous rows with a few missing cells, as CSV with a `label` column."""
    path = tmp_path_factory.mktemp("data") / "labelled.csv"
    make_frame(300, 30, seed=1, holes=0.02).to_csv(path, index=False)
    return path


@pytest.fixture(scope="session")
def labelled_npz(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Numeric-only data as an .npz with X (rows × 4) and y (0 normal, 1 anomaly)."""
    rng = np.random.default_rng(2)
    z = rng.normal(size=(330, 1))
    x = np.hstack([z, 2 * z, -z, 0.5 * z]) + 0.1 * rng.normal(size=(330, 4))
    y = np.zeros(330, dtype=int)
    y[300:] = 1
    x[300:, 1] = -x[300:, 1]  # anomalies flip one coordinate's relation
    path = tmp_path_factory.mktemp("data") / "labelled.npz"
    np.savez(path, X=x, y=y)
    return path
