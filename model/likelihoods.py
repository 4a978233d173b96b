"""Per-feature log-likelihoods of p(x|z), the Gaussian KL, and the ELBO. One value per sample.

Likelihoods are computed over observed entries only (a missing entry contributes 0), which is what
lets the same model score and impute records with gaps (Nazabal et al., "Handling incomplete
heterogeneous data using VAEs", 2020, eq. 5). Numeric features are Gaussian in standardised units.

Images have one likelihood term per pixel (channels summed), see `pixel_log_probs`; `log_probs`
picks the right one, so scoring and training are written once for both kinds.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from model.image_vae import ImageDecoderOutput
from model.images import ImageBatch
from model.preprocessing import EncodedBatch, TabularCodec
from model.vae import DecoderOutput

LOG_2PI = math.log(2.0 * math.pi)

UNSEEN_CATEGORY_PROBABILITY = 1e-6
"""A category never seen in training is scored as if the model gave it this probability: very
unlikely (13.8 nats) yet finite, so the record is still scored and the feature tops `top_features`."""

UNSEEN_CATEGORY_LOG_PROB = math.log(UNSEEN_CATEGORY_PROBABILITY)


def gaussian_log_prob(x: torch.Tensor, mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """Elementwise log N(x; mean, exp(logvar))."""
    return -0.5 * (LOG_2PI + logvar + (x - mean) ** 2 * torch.exp(-logvar))


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)) summed over the latent dim, shape (B,).

    Kingma & Welling (2014), Appendix B: -1/2 * sum(1 + logvar - mu^2 - exp(logvar)).
    """
    return -0.5 * torch.sum(1.0 + logvar - mu.pow(2) - logvar.exp(), dim=-1)


def feature_log_probs(codec: TabularCodec, decoded: DecoderOutput, batch: EncodedBatch) -> torch.Tensor:
    """log p(x_f | z) for every feature, (..., B, F) in schema order; 0 where x_f is missing."""
    leading = decoded.numeric_mean.shape[:-1]
    out = decoded.numeric_mean.new_zeros((*leading, len(codec.schema.features)))
    if codec.numeric:
        lp = gaussian_log_prob(batch.numeric, decoded.numeric_mean, decoded.numeric_logvar)
        out[..., codec.numeric_positions] = torch.where(batch.numeric_mask, lp, 0.0)
    for j, logits in enumerate(decoded.category_logits):
        index = batch.categories[:, j].clamp(min=0)  # (B,)
        log_probs = F.log_softmax(logits, dim=-1)
        lp = log_probs.gather(-1, index.expand(*leading).unsqueeze(-1)).squeeze(-1)
        lp = torch.where(batch.unseen[:, j], UNSEEN_CATEGORY_LOG_PROB, lp)
        out[..., codec.categorical_positions[j]] = torch.where(batch.categorical_mask[:, j], lp, 0.0)
    if codec.boolean:
        target = batch.boolean.expand_as(decoded.boolean_logits)
        lp = -F.binary_cross_entropy_with_logits(decoded.boolean_logits, target, reduction="none")
        out[..., codec.boolean_positions] = torch.where(batch.boolean_mask, lp, 0.0)
    return out


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


def log_probs(
    codec: TabularCodec | None, decoded: DecoderOutput | ImageDecoderOutput, batch: EncodedBatch | ImageBatch
) -> torch.Tensor:
    """Per-feature (tabular) or per-pixel (image) log-likelihoods, (..., B, F)."""
    if isinstance(batch, ImageBatch):
        assert isinstance(decoded, ImageDecoderOutput)
        return pixel_log_probs(decoded, batch)
    assert codec is not None and isinstance(decoded, DecoderOutput)
    return feature_log_probs(codec, decoded, batch)
