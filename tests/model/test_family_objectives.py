"""The families' objectives: each family's training loss and scores are the quantity its paper
defines (IWAE bound, denoising, L1 code penalty, adversarial game through a gradient reversal,
two-layer ELBO), checked on a tiny tabular kind; and every family clears a quality floor."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from tests.conftest import make_tiny_columns, one_thread
from vae_anomaly.model.families import FAMILIES
from vae_anomaly.model.families.base import TrainStep
from vae_anomaly.model.scoring import posterior_noise
from vae_anomaly.training.tabular import fit_detector
from vae_anomaly.training.trainer import TrainConfig

UNCONDITIONAL = [name for name, family in FAMILIES.items() if not family.conditional]
"""The families that model x alone (the CVAE needs a condition: tests/service/test_cvae_*.py)."""


@pytest.fixture(scope="module")
def trained():
    """A tiny vae detector: its kind and a batch to build other families' networks on."""
    with one_thread():
        config = TrainConfig(epochs=2, hidden_dims=[16], latent_dim=2, device="cpu")
        detector = fit_detector(make_tiny_columns(120), config, progress=False).detector
    batch = detector.kind.batch(detector.kind.columns_from_table(make_tiny_columns(16, seed=1)))
    return detector.kind, batch


def build(kind, family: str, **options):
    torch.manual_seed(0)
    config = FAMILIES[family].config_model(latent_dim=2, **options)
    return FAMILIES[family].build(kind, config)


def step(seed: int = 0) -> TrainStep:
    return TrainStep(torch.Generator().manual_seed(seed))


def test_iwae_with_one_sample_is_the_elbo_and_its_bound_is_tighter(trained):
    kind, batch = trained
    vae, iwae = build(kind, "vae"), build(kind, "iwae", iwae_samples=1)
    iwae.load_state_dict(vae.state_dict())
    # K = 1: the bound is a one-draw ELBO estimate with the sampled log p(z) - log q(z|x) in place of
    # the analytic KL; over many draws the two agree.
    draws = posterior_noise(4000, 2, seed=2)[:, :, None]  # (S, 1, 1, L): one draw per call
    with torch.no_grad():
        one_sample = torch.stack([iwae.objective(batch, eps) for eps in draws]).mean(0)
        assert torch.allclose(one_sample, vae.objective(batch, draws[:, 0]), atol=0.05)
    noise = posterior_noise(8, 2, seed=3)
    with torch.no_grad():
        log_px, log_ratio, _ = iwae.log_weights(batch, noise)
        assert (iwae.objective(batch, noise) >= (log_px + log_ratio).mean(0) - 1e-5).all()  # Jensen, same draws
        noise = posterior_noise(256, 2, seed=3)
        scores = [iwae.score(batch, noise, m).score for m in ("iwae", "elbo")]
    assert (scores[0] <= scores[1] + 1e-6).all()


def test_dae_encodes_a_corrupted_input_but_validates_on_the_clean_one(trained):
    kind, batch = trained
    ae, dae = build(kind, "ae"), build(kind, "dae", noise=0.5)
    dae.load_state_dict(ae.state_dict())
    assert not torch.allclose(dae(batch, step()).loss, ae(batch, step()).loss)
    noise = posterior_noise(1, 2, seed=0)
    assert torch.equal(dae.objective(batch, noise), ae.objective(batch, noise))
    gaussian = build(kind, "dae", noise=0.3, noise_type="gaussian")
    gaussian.load_state_dict(ae.state_dict())
    assert not torch.allclose(gaussian(batch, step()).loss, ae(batch, step()).loss)


def test_dae_refuses_a_masking_share_of_one(trained):
    with pytest.raises(ValueError, match=r"noise 1\.0 must be below 1 for masking"):
        FAMILIES["dae"].config_model(latent_dim=2, noise=1.0)


def test_sparse_ae_adds_the_l1_norm_of_the_code(trained):
    kind, batch = trained
    network = build(kind, "sparse-ae", sparsity=0.5)
    terms = network(batch, step())
    code = network.encode(batch.x_in)
    assert torch.allclose(terms.regulariser, 0.5 * code.abs().sum(-1))
    assert torch.allclose(terms.loss, terms.reconstruction + terms.regulariser)


def test_aae_discriminator_descends_and_encoder_ascends_the_discriminator_loss(trained):
    """One backward pass: the discriminator's gradient is that of its cross-entropy, the encoder's
    the opposite (gradient reversal), as the minimax game of Makhzani et al. asks."""
    kind, batch = trained
    network = build(kind, "aae")
    z = network.encode(batch.x_in)
    network.zero_grad()
    network.adversarial_loss(z, step(5)).mean().backward(retain_graph=True)
    reversed_head = network.head.weight.grad.clone()
    reversed_disc = network.discriminator[0].weight.grad.clone()
    # The same cross-entropy without the reversal, prior draws from the same generator state.
    prior = torch.randn(z.shape, generator=torch.Generator().manual_seed(5))
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    logit_code, logit_prior = network.discriminator(z).squeeze(-1), network.discriminator(prior).squeeze(-1)
    plain = bce(logit_prior, torch.ones_like(logit_prior)) + bce(logit_code, torch.zeros_like(logit_code))
    network.zero_grad()
    plain.backward()
    assert torch.allclose(reversed_disc, network.discriminator[0].weight.grad, atol=1e-6)
    assert torch.allclose(reversed_head, -network.head.weight.grad, atol=1e-6)
    assert reversed_head.abs().sum() > 0


def test_aae_joint_score_adds_the_code_prior_density(trained):
    kind, batch = trained
    network = build(kind, "aae").eval()
    noise = posterior_noise(1, 2, seed=0)
    reconstruction, joint = (network.score(batch, noise, m) for m in ("reconstruction", "joint"))
    code = reconstruction.latent_mean
    log_prior = -0.5 * (np.log(2 * np.pi) * code.shape[1] + (code**2).sum(1))
    np.testing.assert_allclose(joint.score, reconstruction.score - log_prior, rtol=1e-5)


def test_hvae_code_decodes_to_its_reconstruction_and_iwae_is_tighter(trained):
    kind, batch = trained
    network = build(kind, "hvae", top_latent_dim=1).eval()
    assert network.latent_dim == 3
    noise = posterior_noise(256, 3, seed=1)
    elbo, iwae = network.score(batch, noise, "elbo"), network.score(batch, noise, "iwae")
    assert (iwae.score <= elbo.score + 1e-6).all()
    with torch.inference_mode():
        decoded = network.decode(torch.from_numpy(elbo.latent_mean).float())
    torch.testing.assert_close(decoded.numeric_mean, elbo.expected.numeric_mean, atol=1e-4, rtol=1e-4)


def _subspace_rows(n: int, rng: np.random.Generator, weights: np.ndarray) -> np.ndarray:
    return rng.normal(size=(n, 2)) @ weights + 0.1 * rng.normal(size=(n, weights.shape[1]))


@pytest.mark.parametrize("family", UNCONDITIONAL)
def test_every_family_separates_rows_shifted_off_the_data_subspace(family: str):
    rng = np.random.default_rng(7)
    weights = rng.normal(size=(2, 6))
    columns = lambda rows: {f"x{i}": rows[:, i] for i in range(rows.shape[1])}  # noqa: E731
    config = TrainConfig(family=family, epochs=25, hidden_dims=[32, 16], latent_dim=2, device="cpu", score_samples=8)
    with one_thread():
        detector = fit_detector(columns(_subspace_rows(600, rng, weights)), config, progress=False).detector
    _, _, vt = np.linalg.svd(weights)
    shift = rng.normal(size=(300, 4)) @ vt[2:]
    shift /= np.linalg.norm(shift, axis=1, keepdims=True)
    normal, outliers = _subspace_rows(300, rng, weights), _subspace_rows(300, rng, weights) + 1.5 * shift
    scores = [detector.score(detector.kind.columns_from_table(columns(r))).terms.score for r in (normal, outliers)]
    auroc = roc_auc_score(np.r_[np.zeros(300), np.ones(300)], np.r_[scores[0], scores[1]])
    assert auroc >= 0.9, f"{family}: AUROC {auroc:.3f}"
