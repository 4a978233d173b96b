"""Network building blocks shared by the kinds' backbones and the families' heads. Every width
comes from a config; nothing here knows about features, pixels or objectives."""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise

from torch import nn


def mlp_body(in_dim: int, hidden_dims: Sequence[int], dropout: float = 0.0) -> nn.Sequential:
    """Linear → SiLU (→ Dropout) blocks over `hidden_dims`; the output has hidden_dims[-1] features."""
    layers: list[nn.Module] = []
    width = in_dim
    for hidden in hidden_dims:
        layers += [nn.Linear(width, hidden), nn.SiLU()]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        width = hidden
    return nn.Sequential(*layers)


def mlp(in_dim: int, hidden_dims: Sequence[int], out_dim: int, dropout: float = 0.0) -> nn.Sequential:
    """`mlp_body` followed by a linear output layer."""
    width = hidden_dims[-1] if hidden_dims else in_dim
    return nn.Sequential(*mlp_body(in_dim, hidden_dims, dropout), nn.Linear(width, out_dim))


def conv_downsamplings(height: int, width: int, smallest: int = 7) -> int:
    """How many stride-2 stages take the image down to about `smallest` pixels on its short side:
    28 → 14 → 7 (two), 64 → 32 → 16 → 8 → 4 (four), 8 → 4 (one); at least one."""
    stages, side = 0, min(height, width)
    while side > smallest or stages == 0:
        side = (side + 1) // 2
        stages += 1
    return stages


def conv_encoder(channels: int, widths: Sequence[int]) -> nn.Sequential:
    """Stride-2 3×3 convolutions (each halves H and W, rounding up) → SiLU, one per width."""
    layers: list[nn.Module] = []
    previous = channels
    for width in widths:
        layers += [nn.Conv2d(previous, width, kernel_size=3, stride=2, padding=1), nn.SiLU()]
        previous = width
    return nn.Sequential(*layers)


def conv_decoder(widths: Sequence[int], out_channels: int) -> nn.Sequential:
    """Stride-2 4×4 transposed convolutions (each doubles H and W) from widths[0] down to
    `out_channels`, SiLU between, a linear output: the mirror of `conv_encoder`."""
    layers: list[nn.Module] = []
    sizes = [*widths, out_channels]
    for i, (previous, width) in enumerate(pairwise(sizes)):
        layers.append(nn.ConvTranspose2d(previous, width, kernel_size=4, stride=2, padding=1))
        if i < len(widths) - 1:
            layers.append(nn.SiLU())
    return nn.Sequential(*layers)
