"""model.likelihoods: the Gaussian log-density and KL against torch.distributions, and the per-feature
log-likelihoods of mixed-type records (missing → 0, unseen category → the fixed floor)."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import Normal, kl_divergence

from vae_anomaly.model.distributions import gaussian_kl, gaussian_log_prob
from vae_anomaly.model.kinds.tabular.backbone import DecoderOutput
from vae_anomaly.model.kinds.tabular.likelihood import (
    UNSEEN_CATEGORY_LOG_PROB,
    UNSEEN_CATEGORY_PROBABILITY,
    feature_log_probs,
)
from vae_anomaly.model.kinds.tabular.preprocessing import TabularCodec, records_to_columns


def test_gaussian_log_prob_matches_torch_normal():
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(5, 7, generator=generator, dtype=torch.float64) * 3
    mean = torch.randn(5, 7, generator=generator, dtype=torch.float64)
    logvar = torch.randn(5, 7, generator=generator, dtype=torch.float64) * 2
    expected = Normal(mean, torch.exp(0.5 * logvar)).log_prob(x)
    got = gaussian_log_prob(x, mean, logvar)
    assert got.shape == (5, 7)
    assert got.dtype == torch.float64
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


def test_gaussian_log_prob_closed_form_and_broadcasting():
    # log N(0; 0, 1) = -log(2π)/2; log N(3; 1, e^2) = -(log 2π + 2 + 4/e^2)/2.
    assert gaussian_log_prob(torch.tensor(0.0), torch.tensor(0.0), torch.tensor(0.0)).item() == pytest.approx(
        -0.5 * math.log(2 * math.pi)
    )
    value = gaussian_log_prob(torch.tensor(3.0), torch.tensor(1.0), torch.tensor(2.0)).item()
    assert value == pytest.approx(-0.5 * (math.log(2 * math.pi) + 2.0 + 4.0 / math.e**2), rel=1e-6)
    # (S, B, F) values against per-feature (F,) parameters, as the decoder's shared variances are used.
    x = torch.zeros(3, 4, 2)
    out = gaussian_log_prob(x, torch.zeros(3, 4, 2), torch.tensor([0.0, 1.0]))
    assert out.shape == (3, 4, 2)
    assert not torch.equal(out[..., 0], out[..., 1])


def test_gaussian_kl_matches_torch_kl_divergence():
    generator = torch.Generator().manual_seed(1)
    mu = torch.randn(6, 3, generator=generator, dtype=torch.float64) * 2
    logvar = torch.randn(6, 3, generator=generator, dtype=torch.float64)
    posterior = Normal(mu, torch.exp(0.5 * logvar))
    prior = Normal(torch.zeros_like(mu), torch.ones_like(mu))
    expected = kl_divergence(posterior, prior).sum(-1)
    got = gaussian_kl(mu, logvar)
    assert got.shape == (6,)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


def test_gaussian_kl_is_zero_only_at_the_prior():
    assert gaussian_kl(torch.zeros(2, 4), torch.zeros(2, 4)).tolist() == [0.0, 0.0]
    assert (gaussian_kl(torch.full((1, 4), 0.5), torch.zeros(1, 4)) > 0).all()
    assert (gaussian_kl(torch.zeros(1, 4), torch.full((1, 4), -1.0)) > 0).all()


def test_unseen_category_constant():
    assert pytest.approx(-13.8155, abs=1e-3) == UNSEEN_CATEGORY_LOG_PROB
    assert math.exp(UNSEEN_CATEGORY_LOG_PROB) == pytest.approx(UNSEEN_CATEGORY_PROBABILITY)


# -- feature_log_probs ----------------------------------------------------------------------------

RECORDS = [
    {"color": "green", "amount": 120.0, "flag": True, "count": 4},
    {"color": None, "amount": None, "flag": None, "count": None},  # every feature missing
    {"color": "purple", "amount": 80.0, "flag": False, "count": 1},  # unseen category
    {"color": "blue", "amount": 100.0, "flag": None, "count": 3},
]


def _decoded(codec: TabularCodec, leading: tuple[int, ...], seed: int) -> DecoderOutput:
    generator = torch.Generator().manual_seed(seed)
    n_num, n_bool = len(codec.numeric), len(codec.boolean)

    def draw(*shape: int) -> torch.Tensor:
        return torch.randn(*leading, *shape, generator=generator)

    return DecoderOutput(
        numeric_mean=draw(n_num),
        numeric_logvar=draw(n_num) * 0.5,
        category_logits=[draw(size) for size in codec.category_sizes],
        boolean_logits=draw(n_bool) * 2,
    )


def _expected_row(codec: TabularCodec, decoded: DecoderOutput, record: dict, index: tuple[int, ...]) -> list[float]:
    """log p(x_f | z) by hand, for one record and one (sample, row) index of the decoder output."""
    out = []
    for feature in codec.schema.features:
        value = record[feature.name]
        if value is None:
            out.append(0.0)
        elif feature.type == "numeric":
            j = [f.name for f in codec.numeric].index(feature.name)
            stats = codec.preprocessing.numeric[feature.name]
            standardised = torch.tensor((value - stats.center) / stats.scale)
            mean = decoded.numeric_mean[index][j]
            std = torch.exp(0.5 * decoded.numeric_logvar[index][j])
            out.append(Normal(mean, std).log_prob(standardised).item())
        elif feature.type == "categorical":
            categories = feature.categories or []
            if value not in categories:
                out.append(UNSEEN_CATEGORY_LOG_PROB)
            else:
                j = [f.name for f in codec.categorical].index(feature.name)
                logits = decoded.category_logits[j][index]
                out.append(torch.log_softmax(logits, -1)[categories.index(value)].item())
        else:
            j = [f.name for f in codec.boolean].index(feature.name)
            p_true = torch.sigmoid(decoded.boolean_logits[index][j])
            out.append(torch.log(p_true if value else 1 - p_true).item())
    return out


def test_feature_log_probs_per_record_shape_and_values(small_codec: TabularCodec):
    batch = small_codec.encode(records_to_columns(small_codec.schema, RECORDS))
    decoded = _decoded(small_codec, (len(RECORDS),), seed=2)
    got = feature_log_probs(small_codec, decoded, batch)
    assert got.shape == (4, 4)
    assert got.dtype == torch.float32
    expected = torch.tensor([_expected_row(small_codec, decoded, r, (i,)) for i, r in enumerate(RECORDS)])
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_feature_log_probs_missing_entries_are_zero(small_codec: TabularCodec):
    batch = small_codec.encode(records_to_columns(small_codec.schema, RECORDS))
    got = feature_log_probs(small_codec, _decoded(small_codec, (4,), seed=3), batch)
    assert got[1].tolist() == [0.0, 0.0, 0.0, 0.0]
    assert got[3, 2].item() == 0.0  # flag missing
    assert (got[0] != 0).all()  # observed entries are real log-densities


def test_feature_log_probs_unseen_category_uses_the_floor(small_codec: TabularCodec):
    batch = small_codec.encode(records_to_columns(small_codec.schema, RECORDS))
    decoded = _decoded(small_codec, (4,), seed=4)
    # Whatever the logits say, the unseen category gets the fixed floor...
    decoded.category_logits[0][2] = torch.tensor([50.0, -50.0, 0.0])
    got = feature_log_probs(small_codec, decoded, batch)
    assert got[2, 0].item() == pytest.approx(UNSEEN_CATEGORY_LOG_PROB)
    # ...while the other features of that record are scored normally.
    assert got[2, 1].item() != 0.0 and got[2, 3].item() != 0.0


def test_feature_log_probs_with_samples_shape_and_slices(small_codec: TabularCodec):
    """(S, B, ...) decoder outputs give (S, B, F), each sample slice equal to the per-record result."""
    batch = small_codec.encode(records_to_columns(small_codec.schema, RECORDS))
    decoded = _decoded(small_codec, (3, 4), seed=5)
    got = feature_log_probs(small_codec, decoded, batch)
    assert got.shape == (3, 4, 4)
    for s in range(3):
        expected = torch.tensor([_expected_row(small_codec, decoded, r, (s, i)) for i, r in enumerate(RECORDS)])
        torch.testing.assert_close(got[s], expected, rtol=1e-5, atol=1e-5)
    assert not torch.equal(got[0], got[1])  # the samples really differ
