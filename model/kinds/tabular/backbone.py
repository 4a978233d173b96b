"""The tabular backbone as pure `nn.Module`s: an MLP encoder body x_in → h and an MLP decoder
z → the parameters of p(x|z) for every feature (mixed types).

No loss and no I/O live here (see `likelihood` and `model.artifact`). The family (`model.families`)
owns what sits between h and z (VAE: Linear(H, 2L) for mu and logvar; AE: Linear(H, L)).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, PositiveInt
from torch import nn

from vae_anomaly.model.networks import mlp, mlp_body

NUMERIC_LOGVAR_MAX = 4.0
"""Largest decoder log-variance of a numeric feature (standardised units): sigma <= 7.4. The lower
bound is `TabularNetworkConfig.numeric_logvar_min`: it keeps a Gaussian from collapsing onto a
discrete value and giving unbounded likelihoods."""


class TabularNetworkConfig(BaseModel):
    """Everything needed to rebuild the backbone; stored in the manifest (the latent size is the
    family's, see `model.families.base.FamilyConfig`)."""

    model_config = ConfigDict(extra="forbid")

    input_dim: int = Field(gt=0)
    hidden_dims: list[PositiveInt]
    n_numeric: int = Field(ge=0)
    category_sizes: list[PositiveInt]
    n_boolean: int = Field(ge=0)
    numeric_variance: Literal["feature", "sample", "fixed"] = "feature"
    numeric_logvar_min: float = Field(default=-9.0, le=0.0)
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)

    @property
    def output_dim(self) -> int:
        per_sample_var = self.n_numeric if self.numeric_variance == "sample" else 0
        return self.n_numeric + per_sample_var + sum(self.category_sizes) + self.n_boolean


@dataclass
class DecoderOutput:
    """Parameters of p(x|z); leading dims (..., B) follow z's."""

    numeric_mean: torch.Tensor  # (..., B, n_numeric)
    numeric_logvar: torch.Tensor  # (..., B, n_numeric), broadcast from (n_numeric,) when per feature
    category_logits: list[torch.Tensor]  # one (..., B, K_j) per categorical feature
    boolean_logits: torch.Tensor  # (..., B, n_boolean)

    def cpu(self) -> DecoderOutput:
        return DecoderOutput(
            self.numeric_mean.cpu(),
            self.numeric_logvar.cpu(),
            [logits.cpu() for logits in self.category_logits],
            self.boolean_logits.cpu(),
        )

    @staticmethod
    def cat(parts: list[DecoderOutput]) -> DecoderOutput:
        """Join consecutive chunks of records."""
        return DecoderOutput(
            torch.cat([p.numeric_mean for p in parts]),
            torch.cat([p.numeric_logvar for p in parts]),
            [torch.cat(logits) for logits in zip(*(p.category_logits for p in parts), strict=True)],
            torch.cat([p.boolean_logits for p in parts]),
        )


class TabularEncoder(nn.Sequential):
    """x_in (B, D_in) → h (B, H): Linear → SiLU (→ Dropout) blocks over `hidden_dims`."""

    def __init__(self, config: TabularNetworkConfig):
        super().__init__(*mlp_body(config.input_dim, config.hidden_dims, config.dropout))


class TabularDecoder(nn.Module):
    """z (..., B, L) → `DecoderOutput`: the encoder's widths reversed, a linear output layer, and the
    numeric log-variances (per feature: learned parameters; per sample: decoder outputs)."""

    def __init__(self, config: TabularNetworkConfig, latent_dim: int):
        super().__init__()
        self.config = config
        hidden = list(reversed(config.hidden_dims))
        self.body = mlp(latent_dim, hidden, config.output_dim, config.dropout)
        if config.numeric_variance == "feature":
            self.numeric_logvar = nn.Parameter(torch.zeros(config.n_numeric))

    def forward(self, z: torch.Tensor) -> DecoderOutput:
        out = self.body(z)
        c = self.config
        n = c.n_numeric
        numeric_mean = out[..., :n]
        offset = n
        if c.numeric_variance == "sample":
            numeric_logvar = out[..., n : 2 * n]
            offset += n
        elif c.numeric_variance == "feature":
            numeric_logvar = self.numeric_logvar.expand_as(numeric_mean)
        else:  # fixed: unit variance in standardised units, the likelihood of a plain squared error
            numeric_logvar = torch.zeros_like(numeric_mean)
        numeric_logvar = numeric_logvar.clamp(c.numeric_logvar_min, NUMERIC_LOGVAR_MAX)
        category_logits = []
        for size in c.category_sizes:
            category_logits.append(out[..., offset : offset + size])
            offset += size
        boolean_logits = out[..., offset : offset + c.n_boolean]
        return DecoderOutput(numeric_mean, numeric_logvar, category_logits, boolean_logits)
