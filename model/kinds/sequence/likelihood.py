"""Per-element log-likelihoods of a window: one term per (time step, sensor), so a score says
which sensor, when. Sensors are Gaussian in standardised units; a missing reading contributes 0
(as for tabular features, Nazabal et al. 2020, eq. 5)."""

from __future__ import annotations

import math

import torch

from model.kinds.sequence.backbone import SequenceDecoderOutput

LOG_2PI = math.log(2.0 * math.pi)


def element_log_probs(decoded: SequenceDecoderOutput, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """log N(x_tc; mean_tc, exp(logvar_c)) for every step t and sensor c: (..., B, T * C), t major.

    x, mask: (B, T, C); mask False where a reading is missing (x holds 0 there).
    """
    mean, logvar = decoded.mean, decoded.logvar
    lp = -0.5 * (LOG_2PI + logvar + (x - mean) ** 2 * torch.exp(-logvar))  # (..., B, T, C)
    lp = torch.where(mask, lp, 0.0)
    return lp.flatten(-2)  # (..., B, T * C), index t * C + c
