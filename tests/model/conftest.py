"""Fixtures of the model tests: small mixed-type data, a hand-built codec and a tiny trained detector.

The detector is trained once per session (a few hundred rows, 15 epochs, about a second on a CPU);
tests that change a detector work on a copy loaded from a saved artifact, never on this one.
Helpers are handed out as fixtures (not imported from here), so the tests work in any import mode.
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import one_thread
from vae_anomaly.model.detector import Detector
from vae_anomaly.model.kinds.tabular.preprocessing import NumericStats, Preprocessing, TabularCodec
from vae_anomaly.model.kinds.tabular.schema import FeatureSpec, Schema
from vae_anomaly.training.tabular import fit_detector
from vae_anomaly.training.trainer import TrainConfig

MIXED_THRESHOLDS = {"warn": 0.05, "critical": 0.02}


def make_mixed_columns(n: int, seed: int) -> dict[str, np.ndarray]:
    """Normal rows with one feature of every kind and real dependencies between them.

    a ~ N(10, 2); b = 3a + small noise; items a count; color "red" when a > 10, else green or blue;
    flag mostly (b > 30).
    """
    rng = np.random.default_rng(seed)
    a = rng.normal(10.0, 2.0, n)
    b = 3.0 * a + rng.normal(0.0, 0.5, n)
    items = rng.poisson(3.0, n) + 1
    color = np.where(a > 10.0, "red", rng.choice(["green", "blue"], n)).astype(object)
    flag = (b > 30.0) ^ (rng.random(n) < 0.1)
    return {"a": a, "b": b, "items": items, "color": color, "flag": flag}


def columns_to_records(columns: dict[str, np.ndarray]) -> list[dict[str, object]]:
    """Columns as the JSON records a client would send (Python floats, ints, strs and bools)."""
    as_lists = {name: values.tolist() for name, values in columns.items()}
    n = len(next(iter(as_lists.values())))
    return [{name: values[i] for name, values in as_lists.items()} for i in range(n)]


def tiny_config(**changes: object) -> TrainConfig:
    fields: dict[str, object] = {
        "epochs": 15,
        "hidden_dims": [16, 8],
        "latent_dim": 2,
        "kl_warmup_epochs": 2,
        "device": "cpu",
        "thresholds": dict(MIXED_THRESHOLDS),
        "seed": 0,
    }
    fields.update(changes)
    return TrainConfig(**fields)


@pytest.fixture(scope="session")
def make_mixed():
    """`make_mixed(n, seed)` → columns of normal mixed-type rows."""
    return make_mixed_columns


@pytest.fixture(scope="session")
def train_tiny():
    """`train_tiny(columns, **config_changes)` → a fitted `TrainResult` with the tiny config."""

    def train(columns: dict[str, np.ndarray], **changes: object):
        with one_thread():
            return fit_detector(columns, tiny_config(**changes), progress=False)

    return train


@pytest.fixture(scope="session")
def mixed_detector() -> Detector:
    """A tiny detector trained on `make_mixed_columns(400, seed=0)`. Treat as read-only."""
    with one_thread():
        return fit_detector(make_mixed_columns(400, seed=0), tiny_config(), progress=False).detector


@pytest.fixture(scope="session")
def mixed_records() -> list[dict[str, object]]:
    """Held-out normal records of the mixed data (a different seed from training)."""
    return columns_to_records(make_mixed_columns(600, seed=1))


@pytest.fixture
def small_schema() -> Schema:
    """Types deliberately interleaved, so per-type blocks must be scattered back to schema order."""
    return Schema(
        features=[
            FeatureSpec(name="color", type="categorical", categories=["blue", "green", "red"]),
            FeatureSpec(name="amount", type="numeric"),
            FeatureSpec(name="flag", type="boolean"),
            FeatureSpec(name="count", type="numeric", integer=True),
        ]
    )


@pytest.fixture
def small_codec(small_schema: Schema) -> TabularCodec:
    preprocessing = Preprocessing(
        numeric={"amount": NumericStats(center=100.0, scale=20.0), "count": NumericStats(center=3.0, scale=2.0)}
    )
    return TabularCodec(small_schema, preprocessing)
