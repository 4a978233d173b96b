"""Masked-feature explanations: which feature, once hidden, makes a record most ordinary.

A feature's contribution is how much the record's score falls when that one feature is treated as
missing and the record is encoded again: s(x) - s(x without f), both at the posterior mean (z = mu,
so the explanation is deterministic and costs one encode and decode per feature). The model already
scores records with gaps (the likelihood counts observed entries only), so "hide f" is exact, not an
imputation guess.

Why not the per-feature terms of -log p(x | z = mu)? The code mu is computed from the whole record,
anomalous value included: one absurd value drags mu, the decoder's reconstruction of the *other*
features goes absurd, and the normal features take the blame (the demo's `amount` = 2890 was
explained by `items`). Hiding the culprit removes its pull on mu, so the rest of the record fits
again and the score falls by far more than hiding any innocent feature would give (the idea of
leave-one-out explanations, e.g. Zintgraf et al., "Visualizing deep neural network decisions:
prediction difference analysis", ICLR 2017, with the model's own handling of missing cells in place
of their conditional sampling). The `expected` value shown beside a feature is its reconstruction
when it is hidden: what the rest of the record predicts for it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from vae_anomaly.model.kinds.tabular.backbone import DecoderOutput
from vae_anomaly.model.kinds.tabular.preprocessing import EncodedBatch, TabularCodec
from vae_anomaly.model.scoring import ScoreTerms

VARIANT_ROWS = 8192
"""Rows (records × (features + 1)) rescored per pass: bounds the memory of wide, large batches."""


@dataclass
class MaskedExplanation:
    """contributions (B, F): s(x) - s(x with feature f hidden), schema order, 0 where f is missing;
    expected: p(x | z = mu) of each feature decoded with that feature hidden (leave-one-out), (B, ...)."""

    contributions: np.ndarray
    expected: DecoderOutput


def hide_features(codec: TabularCodec, owners: torch.Tensor, batch: EncodedBatch, hidden: torch.Tensor) -> EncodedBatch:
    """The batch with the features `hidden` (B, F) bool, schema order, turned into missing cells:
    their encoder columns and observed-indicators zeroed (exactly how a missing cell is encoded) and
    their likelihood masks cleared. `owners` (D_in,) maps each encoder column to its feature."""
    out = EncodedBatch(**batch.__dict__)
    out.x_in = batch.x_in * (~hidden[:, owners]).to(batch.x_in.dtype)
    out.numeric_mask = batch.numeric_mask & ~hidden[:, codec.numeric_positions]
    out.categorical_mask = batch.categorical_mask & ~hidden[:, codec.categorical_positions]
    out.unseen = batch.unseen & out.categorical_mask
    out.boolean_mask = batch.boolean_mask & ~hidden[:, codec.boolean_positions]
    return out


def explain_masked(
    codec: TabularCodec,
    owners: torch.Tensor,
    batch: EncodedBatch,
    missing: np.ndarray,
    rescore: Callable[[EncodedBatch], ScoreTerms],
) -> MaskedExplanation:
    """Rescore each record once whole and once per hidden feature; see the module docstring.
    `missing` (B, F) marks the cells missing in the records themselves (their contribution is 0).

    Records are processed in groups so that a pass holds at most `VARIANT_ROWS` variant rows; each
    record's result depends on that record alone (the same whatever else is in the batch).
    """
    n, f = len(batch), len(codec.schema.features)
    per_pass = max(1, VARIANT_ROWS // (f + 1))
    contributions, expected = [], []
    eye = torch.eye(f, dtype=torch.bool)
    for start in range(0, n, per_pass):
        part = batch.slice(start, start + per_pass)
        c = len(part)
        # Variant v of record i sits at row v * c + i; variant 0 is the record itself, v = 1 + j hides j.
        repeated = part.select(torch.arange(c).repeat(f + 1))
        hidden = torch.cat([torch.zeros((1, f), dtype=torch.bool), eye]).repeat_interleave(c, dim=0)  # ((F+1) c, F)
        terms = rescore(hide_features(codec, owners, repeated, hidden))
        score = terms.score.reshape(f + 1, c)
        drop = score[0][:, None] - score[1:].T  # (c, F)
        contributions.append(np.where(missing[start : start + c], 0.0, drop))
        expected.append(_leave_one_out(codec, terms.expected, f, c))
    return MaskedExplanation(np.concatenate(contributions), DecoderOutput.cat(expected))


def _leave_one_out(codec: TabularCodec, decoded: DecoderOutput, f: int, c: int) -> DecoderOutput:
    """From the decodings of the F + 1 variants ((F+1) c rows), each feature's parameters taken from
    the variant that hid it: (c, ...)."""
    rows = torch.arange(c)

    def pick(values: torch.Tensor, positions: list[int]) -> torch.Tensor:
        """values ((F+1) c, K), one column per feature of a type block → (c, K), column k from the
        variant that hid feature positions[k]."""
        stacked = values.reshape(f + 1, c, len(positions))
        variant = torch.tensor(positions, dtype=torch.long) + 1  # (K,)
        return stacked[variant[None, :], rows[:, None], torch.arange(len(positions))[None, :]]

    numeric_mean = pick(decoded.numeric_mean, codec.numeric_positions)
    numeric_logvar = pick(decoded.numeric_logvar, codec.numeric_positions)
    boolean_logits = pick(decoded.boolean_logits, codec.boolean_positions)
    category_logits = [
        logits.reshape(f + 1, c, -1)[position + 1]
        for logits, position in zip(decoded.category_logits, codec.categorical_positions, strict=True)
    ]
    return DecoderOutput(numeric_mean, numeric_logvar, category_logits, boolean_logits)
