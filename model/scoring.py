"""The one scoring path: score, ELBO, reconstruction error and per-feature contributions.

The CLI, the service and the benchmarks all call `score_batch`, for tabular and image models alike
(the likelihood terms are per feature or per pixel; nothing else differs). It is deterministic: the posterior
noise is a fixed, seeded (S, L) draw shared by every record, so a record's score depends only on the
record and the model, never on the rest of the batch or its position in it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from model.image_vae import ImageDecoderOutput, ImageVAE
from model.images import ImageBatch
from model.likelihoods import LOG_2PI, gaussian_kl, log_probs
from model.preprocessing import EncodedBatch, TabularCodec
from model.vae import DecoderOutput, TabularVAE

ScoreMethod = Literal["elbo", "iwae", "reconstruction"]


class ScoringConfig(BaseModel):
    """How scores are estimated; stored in the manifest so every server scores alike."""

    model_config = ConfigDict(extra="forbid")

    method: ScoreMethod = "elbo"
    n_samples: int = Field(default=32, ge=1, le=4096)
    seed: int = 0
    chunk_size: int = Field(default=2048, ge=1)


def posterior_noise(n_samples: int, latent_dim: int, seed: int) -> torch.Tensor:
    """Fixed standard-normal noise (S, 1, L) for the reparameterisation, in antithetic pairs.

    Pairs (eps, -eps) cancel the first-order error of the Monte-Carlo mean, so the ELBO estimate is
    stable with few samples (Geweke 1988). S odd keeps one unpaired draw.
    """
    generator = torch.Generator().manual_seed(seed)
    half = torch.randn((n_samples + 1) // 2, latent_dim, generator=generator)
    eps = torch.cat([half, -half])[:n_samples]
    return eps.unsqueeze(1)


@dataclass
class ScoreTerms:
    """Per-record results as float64 numpy arrays (B,), (B, F) and (B, L)."""

    score: np.ndarray
    elbo: np.ndarray
    reconstruction_error: np.ndarray
    contributions: np.ndarray  # (B, F) -log p(x_f | z = mu) per feature or pixel; 0 for missing features
    latent_mean: np.ndarray  # (B, L)
    expected: DecoderOutput | ImageDecoderOutput  # p(x | z = mu), on the CPU


def _log_normal(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """log N(z; mu, diag exp(logvar)) summed over the last dim."""
    return -0.5 * torch.sum(LOG_2PI + logvar + (z - mu) ** 2 * torch.exp(-logvar), dim=-1)


@torch.inference_mode()
def score_batch(
    vae: TabularVAE | ImageVAE,
    codec: TabularCodec | None,
    batch: EncodedBatch | ImageBatch,
    noise: torch.Tensor,
    method: ScoreMethod,
) -> ScoreTerms:
    """Score one batch already on the model's device. `noise` is `posterior_noise(...)` on that device.

    - elbo: E_q[log p(x|z)] - KL(q(z|x) || p(z)), the expectation over the S fixed noise draws.
    - score: -elbo, or with method "iwae" minus the importance-weighted bound
      log (1/S) sum_s p(x, z_s) / q(z_s | x) (Burda et al., "Importance Weighted Autoencoders", 2016,
      eq. 8), a tighter estimate of -log p(x).
    - reconstruction_error: -log p(x | z = mu) summed over observed features; its terms are the
      per-feature contributions. Method "reconstruction" uses it as the score.
    """
    mu, logvar = vae.encode(batch.x_in)  # (B, L)
    z = vae.reparameterize(mu, logvar, noise)  # (S, B, L)
    log_px = log_probs(codec, vae.decode(z), batch).sum(-1)  # (S, B)
    kl = gaussian_kl(mu, logvar)  # (B,)
    elbo = log_px.double().mean(0) - kl.double()
    if method == "iwae":
        log_prior = -0.5 * torch.sum(LOG_2PI + z**2, dim=-1)  # (S, B)
        log_w = log_px + log_prior - _log_normal(z, mu, logvar)
        score = -(torch.logsumexp(log_w.double(), dim=0) - math.log(noise.shape[0]))
    expected = vae.decode(mu)
    contributions = -log_probs(codec, expected, batch).double()  # (B, F)
    if method == "reconstruction":
        score = contributions.sum(-1)
    elif method == "elbo":
        score = -elbo
    return ScoreTerms(
        score=score.cpu().numpy(),
        elbo=elbo.cpu().numpy(),
        reconstruction_error=contributions.sum(-1).cpu().numpy(),
        contributions=contributions.cpu().numpy(),
        latent_mean=mu.double().cpu().numpy(),
        expected=expected.cpu(),
    )


def score_in_chunks(
    vae: TabularVAE | ImageVAE,
    codec: TabularCodec | None,
    batch: EncodedBatch | ImageBatch,
    noise: torch.Tensor,
    scoring: ScoringConfig,
) -> ScoreTerms:
    """`score_batch` over chunks of `scoring.chunk_size` inputs moved to the noise's device, so
    memory stays bounded whatever the batch size."""
    parts = [
        score_batch(vae, codec, batch.slice(start, start + scoring.chunk_size).to(noise.device), noise, scoring.method)
        for start in range(0, max(len(batch), 1), scoring.chunk_size)  # one (empty) chunk for no inputs
    ]
    return concat_terms(parts)


def concat_terms(parts: list[ScoreTerms]) -> ScoreTerms:
    """Join the results of consecutive chunks."""
    if len(parts) == 1:
        return parts[0]
    return ScoreTerms(
        score=np.concatenate([p.score for p in parts]),
        elbo=np.concatenate([p.elbo for p in parts]),
        reconstruction_error=np.concatenate([p.reconstruction_error for p in parts]),
        contributions=np.concatenate([p.contributions for p in parts]),
        latent_mean=np.concatenate([p.latent_mean for p in parts]),
        expected=_cat_expected([p.expected for p in parts]),
    )


def _cat_expected(parts: list[DecoderOutput | ImageDecoderOutput]) -> DecoderOutput | ImageDecoderOutput:
    if all(isinstance(p, ImageDecoderOutput) for p in parts):
        return ImageDecoderOutput.cat([p for p in parts if isinstance(p, ImageDecoderOutput)])
    return DecoderOutput.cat([p for p in parts if isinstance(p, DecoderOutput)])
