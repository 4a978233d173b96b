"""Per-element log-likelihoods of a window: one term per (time step, sensor), so a score says
which sensor, when. Sensors are Gaussian in standardised units, or Student-t with `dof` degrees of
freedom (heavy tails: a reading k scale units off costs ~ (dof + 1) log k instead of k² / 2, so a
moderate shift of one sensor no longer dominates a window's score); a missing reading contributes 0
(as for tabular features, Nazabal et al. 2020, eq. 5)."""

from __future__ import annotations

import math

import torch

from vae_anomaly.model.kinds.sequence.backbone import SequenceDecoderOutput

LOG_2PI = math.log(2.0 * math.pi)


def element_log_probs(
    decoded: SequenceDecoderOutput, x: torch.Tensor, mask: torch.Tensor, dof: int | None = None
) -> torch.Tensor:
    """log p(x_tc | z) for every step t and sensor c: (..., B, T * C), t major. Gaussian
    N(mean_tc, exp(logvar_c)) when `dof` is None, else Student-t with location mean_tc, scale
    exp(logvar_c / 2) and `dof` degrees of freedom.

    x, mask: (B, T, C); mask False where a reading is missing (x holds 0 there).
    """
    mean, logvar = decoded.mean, decoded.logvar
    if dof is None:
        lp = -0.5 * (LOG_2PI + logvar + (x - mean) ** 2 * torch.exp(-logvar))  # (..., B, T, C)
    else:
        nu = float(dof)
        constant = math.lgamma((nu + 1) / 2) - math.lgamma(nu / 2) - 0.5 * math.log(nu * math.pi)
        squared = (x - mean) ** 2 * torch.exp(-logvar) / nu
        lp = constant - 0.5 * logvar - 0.5 * (nu + 1) * torch.log1p(squared)
    lp = torch.where(mask, lp, 0.0)
    return lp.flatten(-2)  # (..., B, T * C), index t * C + c
