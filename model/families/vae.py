"""The variational autoencoder families `vae` (ELBO, β = 1), `beta-vae` (ELBO with a KL weight β)
and `iwae` (the importance-weighted bound with K samples in training).

Kingma & Welling, "Auto-Encoding Variational Bayes" (2014): q(z|x) = N(mu, diag(exp(logvar))) from a
linear head on the kind's encoder features h, p(z) = N(0, I), z = mu + sigma * eps, and the kind's
decoder and likelihood for p(x|z). Higgins et al., "β-VAE" (2017): the KL term weighted by β.
Burda et al., "Importance Weighted Autoencoders" (2016): the same network trained on
log (1/K) sum_k p(x, z_k) / q(z_k | x), a bound that tightens as K grows.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from pydantic import Field
from torch import nn

from vae_anomaly.model.distributions import LATENT_LOGVAR_RANGE, gaussian_kl, log_normal, log_standard_normal
from vae_anomaly.model.families.base import (
    ElboNetwork,
    Family,
    KLWarmupConfig,
    LossTerms,
    TrainStep,
    variational_score_terms,
)
from vae_anomaly.model.kinds.base import Corruption, DataKind
from vae_anomaly.model.latent import LatentCode
from vae_anomaly.model.scoring import ScoreMethod, ScoreTerms


class VAEConfig(KLWarmupConfig):
    """The plain VAE: β = 1, the KL weight ramped up over `kl_warmup_epochs`."""

    feature_dropout: float = Field(
        default=0.0, ge=0, lt=1, description="denoising: share of input elements hidden from the encoder"
    )

    def kl_weight(self) -> float:
        return 1.0


class BetaVAEConfig(VAEConfig):
    """The β-VAE: a KL weight β (> 1 favours a smoother, more factorised code; < 1 sharper fits)."""

    beta: float = Field(default=4.0, ge=0, description="weight of the KL term")

    def kl_weight(self) -> float:
        return self.beta


class IWAEConfig(VAEConfig):
    """The IWAE: K posterior draws per row in training; the warm-up weight scales log p(z) - log q(z|x)
    inside the importance weights (at 1 it is exactly the bound of Burda et al.)."""

    iwae_samples: int = Field(default=5, ge=1, le=256, description="importance samples K per row in training")


def reparameterize(mu: torch.Tensor, logvar: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """z = mu + sigma * eps; eps (S, B, L) or (S, 1, L) gives z (S, B, L)."""
    return mu + torch.exp(0.5 * logvar) * eps


def is_mean_noise(noise: torch.Tensor) -> bool:
    """One draw of zeros (S = 1): z = mu + sigma * 0 = mu, exactly (sigma is finite, its logvar clamped).

    Explanations rescore every record once per hidden feature at the posterior mean (the detector's
    `mean_noise`); decoding z and then mu again for the same values was a third of that work."""
    return noise.shape[0] == 1 and not bool(torch.any(noise))


class GaussianEncoderNetwork(ElboNetwork):
    """The kind's encoder, a linear head h → (mu, logvar), and the kind's decoder: what the VAE and
    the IWAE share (they differ in the training bound only)."""

    def __init__(self, kind: DataKind, config: VAEConfig):
        super().__init__()
        self.kind = kind
        self.config = config
        self.latent_dim = config.latent_dim
        self.encoder = kind.build_encoder()
        self.head = nn.Linear(kind.feature_dim(), 2 * config.latent_dim)
        self.decoder = kind.build_decoder(config.latent_dim)
        self.corruption = Corruption("masking", config.feature_dropout) if config.feature_dropout > 0 else None

    def encode(self, x_in: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x_in → mu, logvar (B, L), logvar clamped to `LATENT_LOGVAR_RANGE`."""
        mu, logvar = self.head(self.encoder(x_in)).chunk(2, dim=-1)
        return mu, logvar.clamp(*LATENT_LOGVAR_RANGE)

    def decode(self, z: torch.Tensor) -> Any:
        return self.decoder(z)

    def latent_code(self, batch: Any) -> LatentCode:
        """mu and sigma = exp(logvar / 2) of q(z|x), logvar clamped as in scoring."""
        mu, logvar = self.encode(batch.x_in)
        return LatentCode(mu.double().cpu().numpy(), torch.exp(0.5 * logvar.double()).cpu().numpy())

    def log_px(self, decoded: Any, batch: Any) -> torch.Tensor:
        """log p(x | z) summed over the input's elements, (..., B)."""
        return self.kind.log_likelihood(decoded, batch).sum(-1)

    def elbo_parts(self, batch: Any, eps: torch.Tensor, encoder_batch: Any = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(E log p(x|z), KL) per row for the noise eps (S, B or 1, L); the encoder sees
        `encoder_batch` (a corrupted view) when given, the likelihood always the clean batch."""
        mu, logvar = self.encode((encoder_batch if encoder_batch is not None else batch).x_in)
        z = reparameterize(mu, logvar, eps)  # (S, B, L)
        return self.log_px(self.decode(z), batch).mean(0), gaussian_kl(mu, logvar)

    def encoder_view(self, batch: Any, step: TrainStep) -> Any:
        """`--feature-dropout`: the encoder sees a masked copy in training."""
        return None if self.corruption is None else self.kind.corrupt(batch, self.corruption, step.generator)

    def kl_weight(self) -> float:
        return self.config.kl_weight()

    @torch.inference_mode()
    def score(self, batch: Any, noise: torch.Tensor, method: ScoreMethod) -> ScoreTerms:
        """Score one batch already on the network's device; `noise` is `posterior_noise(...)` there.

        - elbo: E_q[log p(x|z)] - KL(q(z|x) || p(z)), the expectation over the S fixed noise draws.
        - score: -elbo, or with method "iwae" minus the importance-weighted bound
          log (1/S) sum_s p(x, z_s) / q(z_s | x) (Burda et al., "Importance Weighted Autoencoders",
          2016, eq. 8), a tighter estimate of -log p(x).
        - reconstruction_error: -log p(x | z = mu) summed over observed elements; its terms are the
          per-element contributions. Method "reconstruction" uses it as the score.
        """
        mu, logvar = self.encode(batch.x_in)  # (B, L)
        expected = self.decode(mu)
        expected_log_px = self.kind.log_likelihood(expected, batch)  # (B, F)
        if is_mean_noise(noise):  # z = mu exactly: p(x|z) is the decoding at mu, already computed
            z = mu.unsqueeze(0)
            log_px = expected_log_px.sum(-1).unsqueeze(0)  # (1, B)
        else:
            z = reparameterize(mu, logvar, noise)  # (S, B, L)
            log_px = self.log_px(self.decode(z), batch)  # (S, B)
        kl = gaussian_kl(mu, logvar)  # (B,)
        elbo = log_px.double().mean(0) - kl.double()
        contributions = -expected_log_px.double()  # (B, F)
        log_w = log_px + log_standard_normal(z) - log_normal(z, mu, logvar)  # (S, B)
        return variational_score_terms(method, elbo, log_w, contributions, mu, expected)


def iwae_bound(log_px: torch.Tensor, log_prior_ratio: torch.Tensor) -> torch.Tensor:
    """log (1/S) sum_s exp(log p(x|z_s) + log p(z_s) - log q(z_s|x)) over dim 0: (S, B) → (B,)
    (Burda et al. 2016, eq. 8)."""
    return torch.logsumexp(log_px + log_prior_ratio, dim=0) - math.log(log_px.shape[0])


class IWAENetwork(GaussianEncoderNetwork):
    """The VAE's network trained on the importance-weighted bound with K samples."""

    config: IWAEConfig

    def log_weights(self, batch: Any, eps: torch.Tensor, encoder_batch: Any = None) -> tuple[torch.Tensor, ...]:
        """(log p(x|z_s), log p(z_s) - log q(z_s|x)) both (S, B), and the analytic KL (B,)."""
        mu, logvar = self.encode((encoder_batch if encoder_batch is not None else batch).x_in)
        z = reparameterize(mu, logvar, eps)  # (S, B, L)
        log_px = self.log_px(self.decode(z), batch)
        return log_px, log_standard_normal(z) - log_normal(z, mu, logvar), gaussian_kl(mu, logvar)

    def forward(self, batch: Any, step: TrainStep) -> LossTerms:
        """Minus the K-sample bound; the KL reported is the analytic one of q(z|x)."""
        view = self.encoder_view(batch, step)
        k = self.config.iwae_samples
        eps = torch.randn((k, len(batch), self.latent_dim), generator=step.generator).to(batch.x_in.device)
        log_px, ratio, kl = self.log_weights(batch, eps, view)
        bound = iwae_bound(log_px, step.warmup * ratio)
        return LossTerms(loss=-bound, reconstruction=-log_px.mean(0), regulariser=kl)

    def objective(self, batch: Any, noise: torch.Tensor) -> torch.Tensor:
        """The importance-weighted bound with the S fixed validation draws: what training tightens."""
        log_px, ratio, _ = self.log_weights(batch, noise)
        return iwae_bound(log_px, ratio)


VAE = Family(
    name="vae",
    config_model=VAEConfig,
    build=GaussianEncoderNetwork,
    summary="variational autoencoder: ELBO with β = 1 and KL warm-up",
    score_methods=("elbo", "iwae", "reconstruction"),
    default_score="elbo",
    can_sample=True,
)

BETA_VAE = Family(
    name="beta-vae",
    config_model=BetaVAEConfig,
    build=GaussianEncoderNetwork,
    summary="β-VAE: ELBO with the KL term weighted by --beta",
    score_methods=("elbo", "iwae", "reconstruction"),
    default_score="elbo",
    can_sample=True,
)

IWAE = Family(
    name="iwae",
    config_model=IWAEConfig,
    build=IWAENetwork,
    summary="importance-weighted autoencoder: the K-sample bound of Burda et al. (--iwae-samples)",
    score_methods=("iwae", "elbo", "reconstruction"),
    default_score="iwae",
    can_sample=True,
)
