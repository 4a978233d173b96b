"""Per-pixel log-likelihoods of p(x|z), channels summed: one value per pixel. The likelihoods and
why the Gaussian has a floor on its variance are described in `model.kinds.image.backbone`."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from vae_anomaly.model.distributions import gaussian_log_prob
from vae_anomaly.model.kinds.image.backbone import ImageDecoderOutput
from vae_anomaly.model.kinds.image.images import ImageBatch


def continuous_bernoulli_log_norm(logits: torch.Tensor) -> torch.Tensor:
    """log C(lambda) of the continuous Bernoulli, lambda = sigmoid(l): C = l / tanh(l / 2), which
    tends to 2 + l²/6 as l → 0 (Loaiza-Ganem & Cunningham 2019, eq. 4, written in logits)."""
    small = logits.abs() < 1e-3
    safe = torch.where(small, torch.ones_like(logits), logits)
    norm = torch.log(safe / torch.tanh(safe / 2))
    return torch.where(small, math.log(2.0) + logits**2 / 12, norm)


def pixel_log_probs(decoded: ImageDecoderOutput, batch: ImageBatch) -> torch.Tensor:
    """log p(x_pixel | z), channels summed: (..., B, H * W)."""
    x = batch.x.expand_as(decoded.out)
    if decoded.likelihood == "gaussian":
        assert decoded.logvar is not None
        lp = gaussian_log_prob(x, torch.sigmoid(decoded.out), decoded.logvar)
    else:
        lp = -F.binary_cross_entropy_with_logits(decoded.out, x, reduction="none")
        if decoded.likelihood == "continuous_bernoulli":
            lp = lp + continuous_bernoulli_log_norm(decoded.out)
    return lp.sum(-3).flatten(-2)
