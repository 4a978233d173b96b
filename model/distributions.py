"""Gaussian densities shared by both axes: the kinds' Gaussian likelihoods (numeric features,
pixels) and the families' posteriors, priors and KL terms. One value per element or per sample."""

from __future__ import annotations

import math

import torch

LOG_2PI = math.log(2.0 * math.pi)

LATENT_LOGVAR_RANGE = (-12.0, 8.0)
"""Posterior log-variances are clamped here before `exp`: keeps sigma in [2.5e-3, 55]."""


def gaussian_log_prob(x: torch.Tensor, mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """Elementwise log N(x; mean, exp(logvar))."""
    return -0.5 * (LOG_2PI + logvar + (x - mean) ** 2 * torch.exp(-logvar))


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)) summed over the latent dim, shape (B,).

    Kingma & Welling (2014), Appendix B: -1/2 * sum(1 + logvar - mu^2 - exp(logvar)).
    """
    return -0.5 * torch.sum(1.0 + logvar - mu.pow(2) - logvar.exp(), dim=-1)


def log_normal(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """log N(z; mu, diag exp(logvar)) summed over the last dim."""
    return -0.5 * torch.sum(LOG_2PI + logvar + (z - mu) ** 2 * torch.exp(-logvar), dim=-1)


def log_standard_normal(z: torch.Tensor) -> torch.Tensor:
    """log N(z; 0, I) summed over the last dim: the prior density of a code."""
    return -0.5 * torch.sum(LOG_2PI + z**2, dim=-1)
