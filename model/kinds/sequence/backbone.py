"""Sequence backbones as pure `nn.Module`s: encoder body x (B, T, C) → h (B, H) and decoder
z (..., B, L) → per-time-step, per-sensor Gaussian parameters (..., B, T, C).

Two architectures, chosen by `SequenceBackboneConfig.architecture`:

- "recurrent": the variational recurrent autoencoder of Fabius & van Amersfoort, "Variational
  Recurrent Auto-Encoders" (ICLR workshop 2015): a GRU (or LSTM) reads the window, its last hidden
  state summarises it; the decoder starts a second recurrent net from a state computed from z and
  unrolls it for T steps. Unlike the paper the decoder is fed z at every step instead of its own
  previous output: a decoder that sees the previous true value could copy it, and would then
  reconstruct anomalous windows as well as normal ones.
- "conv": 1-D convolutions over time (stride 2 per stage) and their transposed mirror, the
  Conv-AE of SKAB's leaderboard made variational by the family's heads.

The family adds the heads between h and z (VAE: Linear(H, 2L)); nothing here knows about them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import pairwise
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, PositiveInt
from torch import nn

SENSOR_LOGVAR_MAX = 4.0
"""Largest decoder log-variance of a sensor in standardised units (sigma <= 7.4)."""


class SequenceBackboneConfig(BaseModel):
    """Every size of a sequence backbone; stored in the manifest."""

    model_config = ConfigDict(extra="forbid")

    window: int = Field(ge=2, description="time steps T per window")
    sensors: int = Field(ge=1, description="sensor channels C")
    architecture: Literal["recurrent", "conv"] = "conv"
    cell: Literal["gru", "lstm"] = "gru"
    hidden_size: int = Field(default=64, ge=1, description="recurrent state size")
    layers: int = Field(default=1, ge=1, le=4)
    conv_widths: list[PositiveInt] = Field(default_factory=lambda: [32, 64], min_length=1)
    kernel_size: int = Field(default=5, ge=1)
    variance: Literal["sensor", "fixed"] = "sensor"
    logvar_min: float = Field(default=-4.6, le=0.0, description="floor of the decoder log-variance")

    @property
    def conv_steps(self) -> list[int]:
        """Time steps after each stride-2 stage (each rounds up): 30 → 15 → 8."""
        steps = [self.window]
        for _ in self.conv_widths:
            steps.append(math.ceil(steps[-1] / 2))
        return steps

    @property
    def feature_dim(self) -> int:
        """H, the width of the encoder's summary h."""
        if self.architecture == "recurrent":
            return self.hidden_size
        return self.conv_widths[-1] * self.conv_steps[-1]


@dataclass
class SequenceDecoderOutput:
    """Gaussian parameters of p(x | z) for every time step and sensor: mean (..., B, T, C) and
    logvar broadcastable to it (one learned value per sensor, or 0 when fixed)."""

    mean: torch.Tensor
    logvar: torch.Tensor

    def cpu(self) -> SequenceDecoderOutput:
        return SequenceDecoderOutput(self.mean.cpu(), self.logvar.cpu())

    @staticmethod
    def cat(parts: list[SequenceDecoderOutput]) -> SequenceDecoderOutput:
        """Join consecutive chunks of windows (the shared per-sensor logvar is kept once)."""
        return SequenceDecoderOutput(torch.cat([p.mean for p in parts], dim=-3), parts[0].logvar)


def _rnn(config: SequenceBackboneConfig, input_size: int) -> nn.GRU | nn.LSTM:
    cell = nn.GRU if config.cell == "gru" else nn.LSTM
    return cell(input_size, config.hidden_size, num_layers=config.layers, batch_first=True)


class RecurrentEncoder(nn.Module):
    """x (B, T, C) → h (B, H): the last layer's final hidden state of a GRU/LSTM."""

    def __init__(self, config: SequenceBackboneConfig):
        super().__init__()
        self.rnn = _rnn(config, config.sensors)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, state = self.rnn(x)
        hidden = state[0] if isinstance(state, tuple) else state  # (layers, B, H); LSTM: (h, c)
        return hidden[-1]


class ConvEncoder(nn.Module):
    """x (B, T, C) → h (B, W_last * T_last): stride-2 1-D convolutions over time, flattened."""

    def __init__(self, config: SequenceBackboneConfig):
        super().__init__()
        layers: list[nn.Module] = []
        for previous, width in pairwise([config.sensors, *config.conv_widths]):
            pad = config.kernel_size // 2
            layers += [nn.Conv1d(previous, width, config.kernel_size, stride=2, padding=pad), nn.SiLU()]
        self.net = nn.Sequential(*layers, nn.Flatten())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.transpose(1, 2))  # (B, C, T) for Conv1d


class _SensorVariance(nn.Module):
    """The decoder's log-variance: one learned value per sensor, clamped to [logvar_min, MAX]."""

    def __init__(self, config: SequenceBackboneConfig):
        super().__init__()
        self.config = config
        if config.variance == "sensor":
            self.sensor_logvar = nn.Parameter(torch.zeros(config.sensors))

    def logvar(self, like: torch.Tensor) -> torch.Tensor:
        if self.config.variance == "fixed":
            return like.new_zeros(self.config.sensors)
        return self.sensor_logvar.clamp(self.config.logvar_min, SENSOR_LOGVAR_MAX)


class RecurrentDecoder(_SensorVariance):
    """z (..., B, L) → p(x | z) (..., B, T, C): a GRU/LSTM started from tanh(W z), fed z each step."""

    def __init__(self, config: SequenceBackboneConfig, latent_dim: int):
        super().__init__(config)
        self.latent_dim = latent_dim
        self.initial = nn.Linear(latent_dim, config.layers * config.hidden_size)
        self.rnn = _rnn(config, latent_dim)
        self.out = nn.Linear(config.hidden_size, config.sensors)

    def forward(self, z: torch.Tensor) -> SequenceDecoderOutput:
        c = self.config
        leading = z.shape[:-1]
        flat = z.reshape(-1, self.latent_dim)  # (N, L), N = prod(leading)
        h0 = torch.tanh(self.initial(flat)).reshape(-1, c.layers, c.hidden_size).transpose(0, 1).contiguous()
        state = (h0, torch.zeros_like(h0)) if c.cell == "lstm" else h0
        steps = flat.unsqueeze(1).expand(-1, c.window, -1)  # (N, T, L)
        hidden, _ = self.rnn(steps, state)  # (N, T, H)
        mean = self.out(hidden).reshape(*leading, c.window, c.sensors)
        return SequenceDecoderOutput(mean, self.logvar(mean))


class ConvDecoder(_SensorVariance):
    """z (..., B, L) → p(x | z) (..., B, T, C): Linear to the encoder's bottleneck, then stride-2
    transposed 1-D convolutions back to T steps (cropped when T is not a power-of-two multiple)."""

    def __init__(self, config: SequenceBackboneConfig, latent_dim: int):
        super().__init__(config)
        self.latent_dim = latent_dim
        widths = list(reversed(config.conv_widths))
        self.bottleneck = (widths[0], config.conv_steps[-1])
        self.from_latent = nn.Sequential(nn.Linear(latent_dim, widths[0] * config.conv_steps[-1]), nn.SiLU())
        layers: list[nn.Module] = []
        for previous, width in pairwise(widths):
            layers += [nn.ConvTranspose1d(previous, width, 4, stride=2, padding=1), nn.SiLU()]
        layers.append(nn.ConvTranspose1d(widths[-1], config.sensors, 4, stride=2, padding=1))
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> SequenceDecoderOutput:
        c = self.config
        leading = z.shape[:-1]
        h = self.from_latent(z.reshape(-1, self.latent_dim)).reshape(-1, *self.bottleneck)  # (N, W, T')
        out = self.net(h)[..., : c.window]  # (N, C, T)
        mean = out.transpose(1, 2).reshape(*leading, c.window, c.sensors)
        return SequenceDecoderOutput(mean, self.logvar(mean))


def build_sequence_backbone(config: SequenceBackboneConfig, latent_dim: int) -> tuple[nn.Module, nn.Module]:
    """(encoder x (B, T, C) → h (B, H), decoder z (..., B, L) → `SequenceDecoderOutput`)."""
    if config.architecture == "recurrent":
        return RecurrentEncoder(config), RecurrentDecoder(config, latent_dim)
    return ConvEncoder(config), ConvDecoder(config, latent_dim)
