"""The batched VAE ensemble (`model.families.ensemble`): its grouped network computes exactly what
its K members would alone, its scores are their mean and do not depend on the batch, one training
step moves every member, and a backbone it cannot batch runs member by member with the same scores."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.conftest import make_tiny_columns, one_thread
from vae_anomaly.model.families import FAMILIES
from vae_anomaly.model.families.base import TrainStep
from vae_anomaly.model.scoring import posterior_noise
from vae_anomaly.training.tabular import fit_detector
from vae_anomaly.training.trainer import TrainConfig

K = 3


@pytest.fixture(scope="module")
def trained():
    """A tiny tabular kind and a batch to build networks on."""
    with one_thread():
        config = TrainConfig(epochs=2, hidden_dims=[16, 8], latent_dim=2, device="cpu")
        detector = fit_detector(make_tiny_columns(120), config, progress=False).detector
    batch = detector.kind.batch(detector.kind.columns_from_table(make_tiny_columns(16, seed=1)))
    return detector.kind, batch


def ensemble_and_members(kind):
    """The ensemble and, from the same seed, the K plain VAEs it was stacked from."""
    torch.manual_seed(0)
    ensemble = FAMILIES["vae-ensemble"].build(kind, FAMILIES["vae-ensemble"].config_model(latent_dim=2, members=K))
    torch.manual_seed(0)
    vae = FAMILIES["vae"]
    members = [vae.build(kind, vae.config_model(latent_dim=2)) for _ in range(K)]
    return ensemble.eval(), [m.eval() for m in members]


@pytest.mark.parametrize("method", ["elbo", "iwae", "reconstruction"])
def test_batched_scores_are_the_members_mean(trained, method: str):
    kind, batch = trained
    ensemble, members = ensemble_and_members(kind)
    assert ensemble.batched
    noise = posterior_noise(8, 2, seed=4)
    terms = ensemble.score(batch, noise, method)
    alone = [member.score(batch, noise, method) for member in members]
    np.testing.assert_allclose(terms.score, np.mean([t.score for t in alone], axis=0), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(terms.contributions, np.mean([t.contributions for t in alone], axis=0), atol=1e-5)
    np.testing.assert_allclose(terms.latent_mean, alone[0].latent_mean, atol=1e-6)  # member 0's code
    assert len({float(t.score[0]) for t in alone}) == K  # each member has its own initialisation


def test_code_decodes_to_the_reported_reconstruction_and_scores_ignore_the_batch(trained):
    kind, batch = trained
    ensemble, _ = ensemble_and_members(kind)
    noise = posterior_noise(8, 2, seed=4)
    terms = ensemble.score(batch, noise, "elbo")
    with torch.inference_mode():
        decoded = ensemble.decode(torch.from_numpy(terms.latent_mean).float())
        code = ensemble.latent_code(batch)
    torch.testing.assert_close(decoded.numeric_mean, terms.expected.numeric_mean)
    np.testing.assert_allclose(code.mean, terms.latent_mean)
    for start, stop in ((0, 1), (3, 9), (15, 16)):
        part = ensemble.score(batch.slice(start, stop), noise, "elbo")
        np.testing.assert_allclose(part.score, terms.score[start:stop], rtol=1e-6)  # float32 kernels' rounding
    np.testing.assert_array_equal(ensemble.score(batch, noise, "elbo").score, terms.score)  # fixed noise


def test_one_step_moves_every_member_and_the_loss_is_the_members_mean(trained):
    kind, batch = trained
    ensemble, members = ensemble_and_members(kind)
    eps = torch.randn(1, K, len(batch), 2, generator=torch.Generator().manual_seed(1))
    log_px, kl = ensemble.elbo_parts(batch, eps)
    alone = [member.elbo_parts(batch, eps[:, k]) for k, member in enumerate(members)]
    torch.testing.assert_close(log_px, torch.stack([p for p, _ in alone]).mean(0), rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(kl, torch.stack([d for _, d in alone]).mean(0), rtol=1e-5, atol=1e-5)
    before = {name: p.detach().clone() for name, p in ensemble.named_parameters()}
    optimizer = torch.optim.Adam(ensemble.parameters(), lr=1e-2)
    ensemble.train()
    ensemble(batch, TrainStep(torch.Generator().manual_seed(0))).loss.mean().backward()
    optimizer.step()
    for name, p in ensemble.named_parameters():
        moved = (p.detach() - before[name]).flatten(1) if p.dim() > 1 else p.detach() - before[name]
        assert (moved.abs().sum(-1) > 0).all(), f"{name}: a member did not move"


def test_an_unbatchable_backbone_runs_member_by_member_with_the_mean_score():
    from vae_anomaly.model.kinds.image.images import ImageInputs, ImageSpec
    from vae_anomaly.training.image_trainer import fit_image_detector

    images = np.zeros((40, 1, 8, 8), dtype=np.float32)
    images[np.arange(40), 0, :, np.arange(40) % 6 + 1] = 1.0
    config = TrainConfig(epochs=1, batch_size=16, device="cpu", family="vae-ensemble", latent_dim=2, score_samples=2)
    with one_thread():
        detector = fit_image_detector(images, ImageSpec(height=8, width=8, channels=1), config, progress=False).detector
    network = detector.network
    assert not network.batched and len(network.member_nets) == 4  # the default number of members
    batch = detector.kind.batch(ImageInputs(images[:5], [(1, 8, 8)] * 5))
    noise = posterior_noise(2, 2, seed=0)
    terms = network.score(batch, noise, "elbo")
    alone = [member.score(batch, noise, "elbo").score for member in network.member_nets]
    np.testing.assert_allclose(terms.score, np.mean(alone, axis=0))
    assert detector.manifest.family == "vae-ensemble" and detector.manifest.family_config.members == 4
