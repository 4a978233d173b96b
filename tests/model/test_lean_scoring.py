"""The cheaper arithmetic of issue 15 gives the same numbers: a rescore at the posterior mean decodes
each code once (z = mu), and `/score` results decode and convert only the top features' cells."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vae_anomaly.model.detector import Detector
from vae_anomaly.model.distributions import gaussian_kl
from vae_anomaly.model.families.vae import is_mean_noise, reparameterize
from vae_anomaly.model.kinds.tabular.kind import TabularKind, _cell_values, _expected_cells, _json_value


def test_mean_noise_is_recognised():
    assert is_mean_noise(torch.zeros((1, 1, 4)))
    assert not is_mean_noise(torch.zeros((2, 1, 4)))  # several draws: sampled, even if zero
    assert not is_mean_noise(torch.tensor([[[0.0, 1e-30]]]))


def test_rescoring_at_the_mean_equals_decoding_z_and_mu(mixed_detector: Detector, mixed_records: list[dict]):
    """Bit for bit the terms of the former path, which decoded z = mu + sigma * 0 and then mu again."""
    d = mixed_detector
    records = [*mixed_records[:30], {**mixed_records[0], "a": None, "color": "purple"}]
    batch = d.kind.batch(d.kind.columns_from_records(records))
    terms = d.network.score(batch, d.mean_noise, "elbo")
    with torch.inference_mode():
        mu, logvar = d.network.encode(batch.x_in)
        log_px = d.network.log_px(d.network.decode(reparameterize(mu, logvar, d.mean_noise)), batch)
        elbo = log_px.double().mean(0) - gaussian_kl(mu, logvar).double()
        contributions = -d.kind.log_likelihood(d.network.decode(mu), batch).double()
    np.testing.assert_array_equal(terms.elbo, elbo.numpy())
    np.testing.assert_array_equal(terms.score, -elbo.numpy())
    np.testing.assert_array_equal(terms.contributions, contributions.numpy())
    sampled = d.network.score(batch, d.noise, "iwae")  # many draws: the sampled path, unchanged
    assert np.isfinite(sampled.score).all() and not np.array_equal(sampled.score, terms.score)


def _with_asinh(kind: TabularKind) -> TabularKind:
    """The kind with every numeric feature scaled by asinh (`numeric_scaling="tails"`)."""
    numeric = {
        name: stats.model_copy(update={"transform": "asinh", "t_center": 0.1, "t_scale": 0.7})
        for name, stats in kind.config.preprocessing.numeric.items()
    }
    preprocessing = kind.config.preprocessing.model_copy(update={"numeric": numeric})
    return TabularKind(kind.config.model_copy(update={"preprocessing": preprocessing}))


@pytest.mark.parametrize("scaling", ["standard", "asinh"])
def test_top_feature_cells_equal_the_whole_columns(mixed_detector: Detector, mixed_records: list[dict], scaling):
    """Values and expectations of a few cells, for every type (numeric, integer, category, boolean,
    missing) and numeric scaling, equal those read from the fully decoded columns."""
    d = mixed_detector
    kind = d.kind if scaling == "standard" else _with_asinh(d.kind)
    records = [*mixed_records[:20], {**mixed_records[1], "a": None, "color": None}]
    columns = kind.columns_from_records(records)
    decoded = d.score(columns).terms.expected
    n, f = len(records), len(kind.schema.names)
    rng = np.random.default_rng(0)
    rows, features = rng.integers(0, n, 200), rng.integers(0, f, 200)
    full = kind.decoded_columns(decoded)
    names = kind.schema.names
    expected = [full[names[j]][i] for i, j in zip(rows.tolist(), features.tolist(), strict=True)]
    values = [_json_value(kind, names[j], columns[names[j]][i]) for i, j in zip(rows, features, strict=True)]
    got_expected = _expected_cells(kind, decoded, rows, features)
    got_values = _cell_values(kind, columns, rows, features)
    assert [(type(v), v) for v in got_expected] == [(type(v), v) for v in expected]
    same = [a == b or (a != a and b != b) for a, b in zip(got_values, values, strict=True)]  # NaN == NaN here
    assert all(same) and [type(v) for v in got_values] == [type(v) for v in values]


def test_empty_columns_are_independent_missing_columns(mixed_detector: Detector):
    """One block for the float columns instead of one array each: the same values and types, and
    writing a cell of one column leaves every other column as it was."""
    from vae_anomaly.model.kinds.tabular.preprocessing import _empty_columns

    schema = mixed_detector.kind.schema
    columns = _empty_columns(schema, 3)
    assert list(columns) == schema.names
    for feature in schema.features:
        column = columns[feature.name]
        assert column.shape == (3,) and column.flags.c_contiguous
        if feature.type == "categorical":
            assert column.dtype == object and all(v is None for v in column)
        else:
            assert column.dtype == np.float64 and np.isnan(column).all()
    first, *rest = (name for name, f in zip(schema.names, schema.features, strict=True) if f.type != "categorical")
    columns[first][1] = 7.0
    assert columns[first].tolist()[1] == 7.0
    assert all(np.isnan(columns[name]).all() for name in rest)
