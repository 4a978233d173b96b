"""Network builders. Every width comes from the config; nothing here knows about features."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn


def mlp(in_dim: int, hidden_dims: Sequence[int], out_dim: int, dropout: float = 0.0) -> nn.Sequential:
    """Linear → SiLU (→ Dropout) blocks over `hidden_dims`, then a linear output layer."""
    layers: list[nn.Module] = []
    width = in_dim
    for hidden in hidden_dims:
        layers += [nn.Linear(width, hidden), nn.SiLU()]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        width = hidden
    layers.append(nn.Linear(width, out_dim))
    return nn.Sequential(*layers)
