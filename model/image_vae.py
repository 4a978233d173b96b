"""The image VAE as a pure `nn.Module`: a convolutional encoder/decoder with the tabular VAE's API.

The architecture scales with the image: one stride-2 stage per halving down to about 7 pixels
(`networks.conv_downsamplings`), channel widths doubling from `base_width` up to 4×. The decoder
mirrors the encoder and crops its output to the input's size, so odd sizes work too.

Pixel likelihoods (`ImageVAEConfig.likelihood`, see `model.likelihoods.pixel_log_probs`):
- "gaussian": N(x; sigmoid(out), sigma_p²) with one learned log-variance per pixel and channel,
  floored at `pixel_logvar_min` (default -3.2: sigma >= 0.2 on the [0, 1] scale). A pixel that never
  varies in normal images (MNIST's background) gets a small sigma, so ink where there should be none
  costs many nats. The floor matters: on one-class MNIST, digit 8, seed 0, AUROC was 0.843 with
  sigma >= 0.05, 0.852 with 0.1, 0.912 with 0.2 and 0.32, 0.895 with 0.45 (60 epochs, 8 draws): a
  tiny sigma makes every slightly displaced stroke of a normal image look as strange as an anomaly.
- "bernoulli": binary cross-entropy on grey levels; not a density for x in (0, 1) (Loaiza-Ganem &
  Cunningham 2019), kept for comparison.
- "continuous_bernoulli": the normalised version of the above (same paper).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from model.networks import conv_decoder, conv_downsamplings, conv_encoder
from model.vae import LATENT_LOGVAR_RANGE

PixelLikelihood = Literal["gaussian", "bernoulli", "continuous_bernoulli"]

PIXEL_LOGVAR_MAX = 0.0
"""Largest per-pixel log-variance (sigma <= 1 on a [0, 1] scale)."""


class ImageVAEConfig(BaseModel):
    """Everything needed to rebuild the network; stored in the manifest."""

    model_config = ConfigDict(extra="forbid")

    channels: Literal[1, 3]
    height: int = Field(gt=0)
    width: int = Field(gt=0)
    latent_dim: int = Field(gt=0)
    widths: list[int] = Field(min_length=1)
    likelihood: PixelLikelihood = "gaussian"
    pixel_logvar_min: float = Field(default=-3.2, le=0.0)

    @property
    def bottleneck(self) -> tuple[int, int]:
        """Spatial size after the encoder's stride-2 stages (each rounds up)."""
        height, width = self.height, self.width
        for _ in self.widths:
            height, width = math.ceil(height / 2), math.ceil(width / 2)
        return height, width


def image_network_config(
    channels: int,
    height: int,
    width: int,
    latent_dim: int | None = None,
    base_width: int = 32,
    likelihood: PixelLikelihood = "gaussian",
    pixel_logvar_min: float = -3.2,
) -> ImageVAEConfig:
    """Sizes from the image: one stage per halving to ~7 px, widths 32, 64, 128, 128, ...; the latent
    dimension grows slowly with the pixel count (16 for 8×8 and 28×28, 32 for 64×64 RGB)."""
    stages = conv_downsamplings(height, width)
    widths = [min(base_width * 2**i, base_width * 4) for i in range(stages)]
    if latent_dim is None:
        latent_dim = 16 if channels * height * width <= 32 * 32 else 32
    return ImageVAEConfig(
        channels=channels,  # type: ignore[arg-type]
        height=height,
        width=width,
        latent_dim=latent_dim,
        widths=widths,
        likelihood=likelihood,
        pixel_logvar_min=pixel_logvar_min,
    )


@dataclass
class ImageDecoderOutput:
    """Parameters of p(x|z); leading dims (..., B) follow z's, then (C, H, W).

    `out` is the decoder's raw output: logits for the Bernoulli likelihoods, the pre-sigmoid mean for
    the Gaussian one. `logvar` is the per-pixel Gaussian log-variance (C, H, W), or None.
    """

    out: torch.Tensor
    logvar: torch.Tensor | None
    likelihood: PixelLikelihood

    def mean(self) -> torch.Tensor:
        """E[x | z] in [0, 1]: the reconstruction shown to users."""
        if self.likelihood == "continuous_bernoulli":
            return continuous_bernoulli_mean(self.out)
        return torch.sigmoid(self.out)

    def cpu(self) -> ImageDecoderOutput:
        return ImageDecoderOutput(self.out.cpu(), None if self.logvar is None else self.logvar.cpu(), self.likelihood)

    @staticmethod
    def cat(parts: list[ImageDecoderOutput]) -> ImageDecoderOutput:
        first = parts[0]
        return ImageDecoderOutput(torch.cat([p.out for p in parts]), first.logvar, first.likelihood)


def continuous_bernoulli_mean(logits: torch.Tensor) -> torch.Tensor:
    """Mean of CB(lambda = sigmoid(l)): sigmoid(l) / tanh(l / 2) - 1 / l, which tends to 1/2 + l/12
    as l → 0 (Loaiza-Ganem & Cunningham 2019, eq. 7, written in logits)."""
    small = logits.abs() < 1e-3
    safe = torch.where(small, torch.ones_like(logits), logits)
    mean = torch.sigmoid(safe) / torch.tanh(safe / 2) - 1 / safe
    return torch.where(small, 0.5 + logits / 12, mean)


class ImageVAE(nn.Module):
    """Convolutional encoder and decoder for (B, C, H, W) images in [0, 1]."""

    def __init__(self, config: ImageVAEConfig):
        super().__init__()
        self.config = config
        height, width = config.bottleneck
        top = config.widths[-1]
        flat = top * height * width
        self.encoder = nn.Sequential(conv_encoder(config.channels, config.widths), nn.Flatten())
        self.to_latent = nn.Linear(flat, 2 * config.latent_dim)
        self.from_latent = nn.Sequential(
            nn.Linear(config.latent_dim, flat), nn.SiLU(), nn.Unflatten(1, (top, height, width))
        )
        self.decoder = conv_decoder(list(reversed(config.widths)), config.channels)
        if config.likelihood == "gaussian":
            self.pixel_logvar = nn.Parameter(torch.full((config.channels, config.height, config.width), -2.0))

    def encode(self, x_in: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, C, H, W) → mu, logvar (B, L), logvar clamped to `LATENT_LOGVAR_RANGE`."""
        mu, logvar = self.to_latent(self.encoder(x_in)).chunk(2, dim=-1)
        return mu, logvar.clamp(*LATENT_LOGVAR_RANGE)

    @staticmethod
    def reparameterize(mu: torch.Tensor, logvar: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """z = mu + sigma * eps; eps (S, B, L) or (S, 1, L) gives z (S, B, L)."""
        return mu + torch.exp(0.5 * logvar) * eps

    def decode(self, z: torch.Tensor) -> ImageDecoderOutput:
        """z (..., B, L) → p(x|z) for every pixel, (..., B, C, H, W)."""
        c = self.config
        leading = z.shape[:-1]
        out = self.decoder(self.from_latent(z.reshape(-1, c.latent_dim)))
        out = out[..., : c.height, : c.width].reshape(*leading, c.channels, c.height, c.width)
        logvar = None
        if c.likelihood == "gaussian":
            logvar = self.pixel_logvar.clamp(c.pixel_logvar_min, PIXEL_LOGVAR_MAX)
        return ImageDecoderOutput(out, logvar, c.likelihood)
