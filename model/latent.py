"""The latent code of inputs, and paths between codes: what `/encode`, `/interpolate` and
`vae-anomaly encode` share.

A family's network gives each input's code (`FamilyNetwork.latent_code`): the posterior mean, and
the posterior standard deviation where the family has a posterior (VAE families); a deterministic
autoencoder gives its code and no std. `encode_in_chunks` runs it over a batch in fixed-size chunks,
like `model.scoring.score_in_chunks`, so memory stays bounded whatever the batch size. The code is
deterministic: no noise is drawn.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch

MAX_INTERPOLATION_STEPS = 256
"""Upper bound of `/interpolate`'s `steps` (each step is one decoded record or image)."""


@dataclass
class LatentCode:
    """Codes of B inputs as float64 numpy arrays: `mean` (B, L) and `std` (B, L), or `std` None
    for families without a posterior distribution (deterministic autoencoders)."""

    mean: np.ndarray
    std: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.mean.shape[0])

    @property
    def latent_dim(self) -> int:
        return int(self.mean.shape[1])

    @staticmethod
    def cat(parts: list[LatentCode]) -> LatentCode:
        """Join the codes of consecutive chunks, in order."""
        if len(parts) == 1:
            return parts[0]
        stds = [p.std for p in parts if p.std is not None]
        std = np.concatenate(stds) if len(stds) == len(parts) else None
        return LatentCode(np.concatenate([p.mean for p in parts]), std)


class EncodingNetwork(Protocol):
    """What `encode_in_chunks` needs of a family's network."""

    def latent_code(self, batch: Any) -> LatentCode: ...


class Sliceable(Protocol):
    def __len__(self) -> int: ...

    def slice(self, start: int, stop: int) -> Any: ...


def encode_in_chunks(network: EncodingNetwork, batch: Sliceable, chunk_size: int, device: torch.device) -> LatentCode:
    """`network.latent_code` over chunks of `chunk_size` inputs moved to `device`, under
    `inference_mode` (the network is expected in `eval()`, as the detector keeps it)."""
    with torch.inference_mode():
        parts = [
            network.latent_code(batch.slice(start, start + chunk_size).to(device))
            for start in range(0, max(len(batch), 1), chunk_size)  # one (empty) chunk for no inputs
        ]
    return LatentCode.cat(parts)


def interpolation_weights(steps: int) -> np.ndarray:
    """(steps,) evenly spaced t in [0, 1], both ends included: t = 0 is the first input's code,
    t = 1 the second's. `steps` must be at least 2 (the two ends)."""
    if not 2 <= steps <= MAX_INTERPOLATION_STEPS:
        raise ValueError(f"steps must be between 2 and {MAX_INTERPOLATION_STEPS}, got {steps}")
    return np.linspace(0.0, 1.0, steps)


def interpolate_codes(start: np.ndarray, end: np.ndarray, steps: int) -> np.ndarray:
    """(steps, L) codes on the straight line from `start` (L,) to `end` (L,), ends included.

    Linear, not spherical: the posterior means of a VAE lie well inside the prior's bulk (they
    shrink towards 0, unlike prior draws, whose norm concentrates near sqrt(L)), so the straight
    path between two means stays where the decoder was trained; the same holds for an
    autoencoder's codes, which have no prior at all.
    """
    t = interpolation_weights(steps)[:, None]  # (steps, 1)
    return (1.0 - t) * start[None, :] + t * end[None, :]
