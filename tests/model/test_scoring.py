"""model.scoring and the Detector's scoring path: determinism, ELBO/IWAE relations, per-feature
contributions, missing and unseen values, and the `/score` result objects."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from tests.conftest import SCORE_RESULT_FIELDS
from vae_anomaly.model.detector import Detector
from vae_anomaly.model.kinds.tabular.explanations import explain_masked
from vae_anomaly.model.kinds.tabular.kind import score_columns, score_results
from vae_anomaly.model.kinds.tabular.likelihood import UNSEEN_CATEGORY_LOG_PROB
from vae_anomaly.model.scoring import ScoringConfig, posterior_noise


def _terms(detector: Detector, records: list[dict]):
    return detector.terms(detector.kind.columns_from_records(records))


def _masked_contributions(d: Detector, records: list[dict]) -> np.ndarray:
    """What `top_features` ranks by: the fall of the score when each feature alone is hidden."""
    columns = d.kind.columns_from_records(records)
    batch, missing = d.kind.batch(columns), d.kind.missing(columns)
    return explain_masked(d.kind.codec, d.kind.owners, batch, missing, d.rescore).contributions


# -- posterior noise ------------------------------------------------------------------------------


def test_posterior_noise_shape_antithetic_and_seeded():
    noise = posterior_noise(6, 3, seed=7)
    assert noise.shape == (6, 1, 3) and noise.dtype == torch.float32
    torch.testing.assert_close(noise[3:], -noise[:3], rtol=0, atol=0)
    odd = posterior_noise(5, 3, seed=7)
    assert odd.shape == (5, 1, 3)
    torch.testing.assert_close(odd[:3], noise[:3], rtol=0, atol=0)  # same draws, last pair cut short
    torch.testing.assert_close(odd[3:], -noise[:2], rtol=0, atol=0)
    assert torch.equal(posterior_noise(6, 3, seed=7), noise)
    assert not torch.equal(posterior_noise(6, 3, seed=8), noise)


# -- shapes ---------------------------------------------------------------------------------------


def test_score_terms_shapes_and_dtypes(mixed_detector: Detector, mixed_records: list[dict]):
    terms = _terms(mixed_detector, mixed_records[:7])
    n_features = len(mixed_detector.kind.schema.features)
    latent = mixed_detector.manifest.family_config.latent_dim
    for name, shape in [
        ("score", (7,)),
        ("elbo", (7,)),
        ("reconstruction_error", (7,)),
        ("contributions", (7, n_features)),
        ("latent_mean", (7, latent)),
    ]:
        value = getattr(terms, name)
        assert value.shape == shape, name
        assert value.dtype == np.float64, name
        assert np.isfinite(value).all(), name
    assert terms.expected.numeric_mean.shape == (7, 3)  # a, b, items
    assert [logits.shape for logits in terms.expected.category_logits] == [(7, 3)]
    assert terms.expected.boolean_logits.shape == (7, 1)


def test_no_records_give_empty_results(mixed_detector: Detector):
    columns = mixed_detector.kind.columns_from_records([])
    terms = mixed_detector.terms(columns)
    assert terms.score.shape == (0,) and terms.contributions.shape == (0, 5)
    assert mixed_detector.score_results(columns) == []


# -- determinism ----------------------------------------------------------------------------------


def test_score_does_not_depend_on_batch_or_position(mixed_detector: Detector, mixed_records: list[dict]):
    record, others = mixed_records[0], mixed_records[1:501]
    alone = _terms(mixed_detector, [record])
    for position in (0, 250, 500):
        batch = [*others[:position], record, *others[position:]]
        assert len(batch) == 501
        terms = _terms(mixed_detector, batch)
        np.testing.assert_allclose(terms.score[position], alone.score[0], rtol=1e-5)
        np.testing.assert_allclose(terms.elbo[position], alone.elbo[0], rtol=1e-5)
        np.testing.assert_allclose(terms.contributions[position], alone.contributions[0], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(terms.latent_mean[position], alone.latent_mean[0], rtol=1e-5, atol=1e-6)
    # and scoring again gives the same numbers: the posterior noise is fixed, not redrawn
    np.testing.assert_array_equal(_terms(mixed_detector, [record]).score, alone.score)


def test_chunking_does_not_change_scores(mixed_detector: Detector, mixed_records: list[dict]):
    columns = mixed_detector.kind.columns_from_records(mixed_records[:50])
    d = mixed_detector
    whole = score_columns(d.network, d.kind, columns, d.noise, ScoringConfig(chunk_size=2048))
    chunked = score_columns(d.network, d.kind, columns, d.noise, ScoringConfig(chunk_size=7))
    np.testing.assert_allclose(chunked.score, whole.score, rtol=1e-5)
    np.testing.assert_allclose(chunked.contributions, whole.contributions, rtol=1e-5, atol=1e-6)
    assert chunked.expected.numeric_mean.shape == (50, 3)


# -- ELBO and IWAE --------------------------------------------------------------------------------


def test_elbo_score_is_minus_elbo(mixed_detector: Detector, mixed_records: list[dict]):
    assert mixed_detector.manifest.scoring.method == "elbo"
    terms = _terms(mixed_detector, mixed_records[:100])
    np.testing.assert_array_equal(terms.score, -terms.elbo)
    assert np.all(terms.score > 0)  # -log-likelihood of a mixed record with discrete parts


def _batch(detector: Detector, records: list[dict]):
    return detector.kind.codec.encode(detector.kind.columns_from_records(records))


def _moment_matched_noise(n_samples: int, latent_dim: int, seed: int) -> torch.Tensor:
    """Antithetic draws rescaled so each latent dim has sample mean 0 and mean square exactly 1."""
    noise = posterior_noise(n_samples, latent_dim, seed)
    return noise / noise.pow(2).mean(0, keepdim=True).sqrt()


def test_iwae_score_at_most_elbo_score(mixed_detector: Detector, mixed_records: list[dict]):
    """iwae_score <= elbo_score (= -ELBO) for the same noise.

    -log mean_s w_s <= -mean_s log w_s (Jensen), and mean_s log w_s is the ELBO with a sampled KL.
    When the draws have mean 0 and mean square 1 in every latent dim, the sampled KL equals the
    analytic one that `elbo` uses, so the inequality holds record by record with no slack. (With
    arbitrary draws it holds only in expectation: the two KL estimates differ a little.)
    """
    d = mixed_detector
    batch = _batch(d, mixed_records[:300])
    noise = _moment_matched_noise(32, d.manifest.family_config.latent_dim, seed=0)
    elbo = d.network.score(batch, noise, "elbo")
    iwae = d.network.score(batch, noise, "iwae")
    assert np.all(iwae.score <= elbo.score + 1e-5)
    assert np.mean(elbo.score - iwae.score) > 1e-5  # strictly tighter on average, not the same number
    # Everything but the score is shared between the methods.
    np.testing.assert_array_equal(iwae.elbo, elbo.elbo)
    np.testing.assert_array_equal(iwae.contributions, elbo.contributions)


def test_iwae_is_jensen_tighter_than_its_single_samples(mixed_detector: Detector, mixed_records: list[dict]):
    """For any fixed draws, the S-sample IWAE score is at most the mean of the one-sample scores over
    the same draws (-log mean_s w_s <= mean_s -log w_s) and at least their minimum."""
    d = mixed_detector
    batch = _batch(d, mixed_records[:200])
    noise = posterior_noise(8, d.manifest.family_config.latent_dim, seed=3)
    joint = d.network.score(batch, noise, "iwae").score
    singles = np.stack([d.network.score(batch, noise[s : s + 1], "iwae").score for s in range(8)])
    assert np.all(joint <= singles.mean(0) + 1e-5)
    assert np.all(joint >= singles.min(0) - 1e-5)
    assert np.mean(singles.mean(0) - joint) > 1e-5


def test_one_sample_iwae_is_the_sampled_elbo(mixed_detector: Detector, mixed_records: list[dict]):
    """S = 1: the IWAE score is -(log p(x|z) + log p(z) - log q(z|x)) at z = mu + sigma * eps."""
    d = mixed_detector
    batch = _batch(d, mixed_records[:20])
    eps = posterior_noise(1, 2, seed=11)
    got = d.network.score(batch, eps, "iwae")
    with torch.inference_mode():
        mu, logvar = d.network.encode(batch.x_in)
        z = (mu + torch.exp(0.5 * logvar) * eps[0]).double()
        mu, logvar = mu.double(), logvar.double()
        log_q = torch.distributions.Normal(mu, torch.exp(0.5 * logvar)).log_prob(z).sum(-1)
        log_prior = torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(-1)
    # log p(x|z) from the ELBO method with the same single draw: its elbo is log p(x|z) - KL(analytic).
    elbo_terms = d.network.score(batch, eps, "elbo")
    kl = (-0.5 * (1 + logvar - mu**2 - logvar.exp()).sum(-1)).numpy()
    log_px = elbo_terms.elbo + kl
    np.testing.assert_allclose(got.score, -(log_px + log_prior.numpy() - log_q.numpy()), rtol=1e-4, atol=1e-4)


# -- contributions --------------------------------------------------------------------------------


def test_reconstruction_error_is_the_sum_of_contributions(mixed_detector: Detector, mixed_records: list[dict]):
    terms = _terms(mixed_detector, mixed_records[:64])
    np.testing.assert_allclose(terms.reconstruction_error, terms.contributions.sum(1), rtol=1e-12)
    assert np.all(terms.contributions[:, 3] > 0)  # a categorical NLL is positive


def test_numeric_contribution_is_the_gaussian_nll_at_the_posterior_mean(
    mixed_detector: Detector, mixed_records: list[dict]
):
    d = mixed_detector
    records = mixed_records[:10]
    terms = _terms(d, records)
    stats = d.manifest.kind_config.preprocessing.numeric["b"]
    x = (np.array([r["b"] for r in records]) - stats.center) / stats.scale
    mean = terms.expected.numeric_mean[:, 1].double().numpy()
    logvar = terms.expected.numeric_logvar[:, 1].double().numpy()
    nll = 0.5 * (math.log(2 * math.pi) + logvar + (x - mean) ** 2 / np.exp(logvar))
    np.testing.assert_allclose(terms.contributions[:, 1], nll, rtol=1e-4, atol=1e-5)


def test_missing_features_are_excluded(mixed_detector: Detector, mixed_records: list[dict]):
    d = mixed_detector
    full = mixed_records[2]
    gappy = {**full, "a": None, "flag": None}
    terms = _terms(d, [full, gappy])
    assert terms.contributions[1, 0] == 0.0 and terms.contributions[1, 4] == 0.0
    assert terms.contributions[0, 0] != 0.0
    assert terms.score[0] != terms.score[1]
    results = d.score_results(d.kind.columns_from_records([gappy]), explain=5)
    (result,) = results
    assert result["missing"] == ["a", "flag"]
    masked = _masked_contributions(d, [gappy])
    assert masked[0, 0] == 0.0 and masked[0, 4] == 0.0
    assert [t["feature"] for t in result["top_features"]] == sorted(
        ["b", "items", "color"], key=lambda name: -masked[0, d.kind.schema.names.index(name)]
    )
    assert math.isfinite(result["score"])


def test_top_features_stop_at_missing_ones(mixed_detector: Detector, mixed_records: list[dict]):
    d = mixed_detector
    record = {name: None for name in d.kind.schema.names} | {"color": mixed_records[0]["color"]}
    (result,) = d.score_results(d.kind.columns_from_records([record]), explain=3)
    assert [t["feature"] for t in result["top_features"]] == ["color"]
    assert result["missing"] == ["a", "b", "items", "flag"]
    empty = {name: None for name in d.kind.schema.names}
    at_mean = d.rescore(d.kind.batch(d.kind.columns_from_records([record, empty]))).score
    assert result["top_features"][0]["contribution"] == pytest.approx(at_mean[0] - at_mean[1])


def test_missing_features_rank_below_negative_contributions(mixed_detector: Detector, mixed_records: list[dict]):
    """A numeric log-density can exceed 1, so an observed feature may contribute less than 0: it still
    ranks above every missing feature (whose contribution is a placeholder 0)."""
    d = mixed_detector
    scored = d.score(d.kind.columns_from_records([{**mixed_records[0], "items": None}]))
    contributions = np.array([[0.5, -2.0, 0.0, 1.0, 0.3]])  # a, b, items (missing), color, flag
    crafted = dataclasses.replace(
        scored, terms=dataclasses.replace(scored.terms, contributions=contributions), rescore=None
    )
    (result,) = score_results(d.kind, crafted, explain=5)
    assert [t["feature"] for t in result["top_features"]] == ["color", "a", "flag", "b"]
    assert result["missing"] == ["items"]


def test_unseen_category_comes_first(mixed_detector: Detector, mixed_records: list[dict]):
    d = mixed_detector
    record = {**mixed_records[3], "color": "purple"}
    (result,) = d.score_results(d.kind.columns_from_records([record]), explain=3)
    first = result["top_features"][0]
    assert first["feature"] == "color"
    assert first["value"] == "purple"
    # Hiding the colour removes its 13.8 nats, give or take how the code of the rest moves.
    assert first["contribution"] == pytest.approx(-UNSEEN_CATEGORY_LOG_PROB, abs=1.0)
    assert first["expected"] in ["blue", "green", "red"]
    assert result["missing"] == []
    (plain,) = d.score_results(d.kind.columns_from_records([mixed_records[3]]))
    assert result["score"] > plain["score"] + 10


# -- result objects -------------------------------------------------------------------------------


def test_score_results_fields(mixed_detector: Detector, mixed_records: list[dict]):
    d = mixed_detector
    records = mixed_records[:40]
    results = d.score_results(d.kind.columns_from_records(records), explain=2)
    terms = _terms(d, records)
    masked = _masked_contributions(d, records)
    assert len(results) == 40
    calibration_size = len(d.manifest.calibration_scores)
    for i, result in enumerate(results):
        assert set(result) == set(SCORE_RESULT_FIELDS)
        assert result["score"] == pytest.approx(terms.score[i])
        assert 1 / (calibration_size + 1) <= result["p_value"] <= 1.0
        exceeded = [name for name, t in d.thresholds.thresholds.items() if result["score"] > t.value]
        assert result["thresholds_exceeded"] == exceeded
        assert result["is_anomaly"] is (result["score"] > d.thresholds.thresholds["warn"].value)
        assert result["missing"] == []
        assert len(result["top_features"]) == 2
        contributions = [t["contribution"] for t in result["top_features"]]
        assert contributions == sorted(contributions, reverse=True)
        assert contributions[0] == pytest.approx(masked[i].max())
        for top in result["top_features"]:
            assert set(top) == {"feature", "contribution", "value", "expected"}
            assert top["value"] == records[i][top["feature"]]
            assert type(top["value"]) is type(records[i][top["feature"]])  # items an int, flag a bool
            assert type(top["expected"]) is type(records[i][top["feature"]])


def test_explain_zero_gives_no_top_features(mixed_detector: Detector, mixed_records: list[dict]):
    d = mixed_detector
    results = d.score_results(d.kind.columns_from_records(mixed_records[:3]), explain=0)
    assert [r["top_features"] for r in results] == [[], [], []]


def test_a_record_breaking_the_correlation_is_flagged(mixed_detector: Detector, mixed_records: list[dict]):
    d = mixed_detector
    normal = mixed_records[5]
    broken = {**normal, "b": -3.0 * normal["a"]}
    results = d.score_results(d.kind.columns_from_records([normal, broken]), explain=1)
    assert results[1]["is_anomaly"] is True
    assert results[1]["thresholds_exceeded"] == ["warn", "critical"]
    assert results[1]["p_value"] == pytest.approx(1 / (len(d.manifest.calibration_scores) + 1))
    assert results[1]["top_features"][0]["feature"] in {"a", "b"}
    assert results[1]["score"] > results[0]["score"]


def test_scores_follow_a_threshold_change(mixed_detector: Detector, mixed_records: list[dict]):
    d = Detector(
        mixed_detector.manifest, mixed_detector.kind, mixed_detector.network, torch.device("cpu")
    )  # own thresholds
    columns = d.kind.columns_from_records(mixed_records[:30])
    assert not d.score(columns).exceeded[:, 0].all()
    d.thresholds = d.thresholds.with_value("warn", -1e9)
    scored = d.score(columns)
    assert scored.thresholds is d.thresholds
    assert scored.exceeded[:, 0].all()
    assert scored.exceeded.shape == (30, 2)
    assert all(r["is_anomaly"] for r in d.score_results(columns))
    assert mixed_detector.thresholds.thresholds["warn"].value > -1e9


# -- reconstruction, sampling, encoding -----------------------------------------------------------


def test_reconstruct_imputes_missing_values(mixed_detector: Detector, mixed_records: list[dict]):
    d = mixed_detector
    record = {**mixed_records[0], "b": None, "color": None}
    (result,) = d.reconstruct(d.kind.columns_from_records([record]))
    assert result["imputed"] == ["b", "color"]
    assert result["feature_errors"]["b"] is None and result["feature_errors"]["color"] is None
    assert result["feature_errors"]["a"] > -10
    reconstruction = result["reconstruction"]
    assert list(reconstruction) == d.kind.schema.names
    # b = 3a + noise in training: the imputed b follows the observed a.
    assert reconstruction["b"] == pytest.approx(3 * record["a"], abs=3.0)
    assert reconstruction["color"] in ["blue", "green", "red"]
    assert isinstance(reconstruction["items"], int) and isinstance(reconstruction["flag"], bool)


def test_sample_is_seeded_and_schema_shaped(mixed_detector: Detector):
    d = mixed_detector
    first = d.sample(20, seed=1)
    assert len(first) == 20
    assert d.sample(20, seed=1) == first
    assert d.sample(20, seed=2) != first
    for record in first:
        assert list(record) == d.kind.schema.names
        assert record["color"] in ["blue", "green", "red"]
        assert isinstance(record["flag"], bool) and isinstance(record["items"], int)
    b_over_a = np.array([r["b"] for r in d.sample(500, seed=3)]) / np.array([r["a"] for r in d.sample(500, seed=3)])
    assert np.median(b_over_a) == pytest.approx(3.0, abs=0.5)


def test_encode_gives_latent_means(mixed_detector: Detector, mixed_records: list[dict]):
    d = mixed_detector
    columns = d.kind.columns_from_records(mixed_records[:9])
    code = d.encode(columns)
    assert code.mean.shape == (9, d.manifest.family_config.latent_dim) and code.mean.dtype == np.float64
    np.testing.assert_allclose(code.mean, d.terms(columns).latent_mean, rtol=1e-6, atol=1e-7)
