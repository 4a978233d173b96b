"""Per-feature log-likelihoods of p(x|z) for mixed-type records. One value per feature.

Likelihoods are computed over observed entries only (a missing entry contributes 0), which is what
lets the same model score and impute records with gaps (Nazabal et al., "Handling incomplete
heterogeneous data using VAEs", 2020, eq. 5). Numeric features are Gaussian in standardised units.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from vae_anomaly.model.distributions import gaussian_log_prob
from vae_anomaly.model.kinds.tabular.backbone import DecoderOutput
from vae_anomaly.model.kinds.tabular.preprocessing import EncodedBatch, TabularCodec

UNSEEN_CATEGORY_PROBABILITY = 1e-6
"""A category never seen in training is scored as if the model gave it this probability: very
unlikely (13.8 nats) yet finite, so the record is still scored and the feature tops `top_features`."""

UNSEEN_CATEGORY_LOG_PROB = math.log(UNSEEN_CATEGORY_PROBABILITY)


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
