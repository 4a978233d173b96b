"""The family axis: what is learned (objective, latent structure) and which scores exist.

A family builds its network around any kind's backbone (`model.kinds.base.DataKind`): it owns the
heads between the kind's encoder features h and its latent code, the training objective and the
scores. The network is an `nn.Module` whose `forward(batch, step)` returns the per-row training
loss terms, so the trainer only ever calls `net(batch, step)` (and a data-parallel wrapper, which
syncs gradients through `forward`, works unchanged). Families are registered by name in
`model.families.FAMILIES`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from vae_anomaly.model.kinds.base import DataKind
from vae_anomaly.model.latent import LatentCode
from vae_anomaly.model.scoring import ScoreMethod, ScoreTerms


class FamilyConfig(BaseModel):
    """A family's manifest section and training options; subclasses add the family's own options
    (each one a `vae-anomaly train` flag of that family only)."""

    model_config = ConfigDict(extra="forbid")

    latent_dim: int = Field(gt=0)

    def warmup_epochs(self) -> int:
        """Epochs over which the regulariser's weight ramps up; early stopping waits for them."""
        return 0


class KLWarmupConfig(FamilyConfig):
    """A variational family's config: the KL term's weight ramps up from 0 over `kl_warmup_epochs`,
    so the decoder learns to reconstruct before the prior pulls the codes together (a KL at full weight
    from the first step collapses the posterior onto the prior)."""

    kl_warmup_epochs: int = Field(
        default=10, ge=0, description="epochs over which the KL weight ramps up to its full value"
    )

    def warmup_epochs(self) -> int:
        return self.kl_warmup_epochs


@dataclass(frozen=True)
class TrainStep:
    """What a training forward pass needs besides the batch: the random generator for its noise
    (posterior draws, input corruption) and the regulariser's warm-up weight in [0, 1]."""

    generator: torch.Generator
    warmup: float = 1.0


@dataclass
class LossTerms:
    """Per-row training terms, (B,): `loss` is minimised (its mean); the others are reported."""

    loss: torch.Tensor
    reconstruction: torch.Tensor  # -log p(x | z), nats per row
    regulariser: torch.Tensor  # KL(q(z|x) || p(z)), or the code penalty; 0 where there is none


class FamilyNetwork(nn.Module):
    """The shared surface of every family's network (see the module docstring)."""

    latent_dim: int

    def forward(self, batch: Any, step: TrainStep) -> LossTerms:  # pragma: no cover - abstract
        raise NotImplementedError

    def objective(self, batch: Any, noise: torch.Tensor) -> torch.Tensor:
        """(B,) the family's validation objective, higher is better (ELBO, or -reconstruction NLL),
        with fixed noise: early stopping and the training summary use it."""
        raise NotImplementedError

    def score(self, batch: Any, noise: torch.Tensor, method: ScoreMethod) -> ScoreTerms:
        """Score one batch on the network's device (see `model.scoring`)."""
        raise NotImplementedError

    def decode(self, z: torch.Tensor) -> Any:
        """z (..., B, L) → the kind's decoder output."""
        raise NotImplementedError

    def decode_given(self, z: torch.Tensor, condition: torch.Tensor | None) -> Any:
        """z (B, L) and the condition's one-hot encoding (B, C) → the kind's decoder output: what
        sampling calls. Unconditional families take None and decode z alone; conditional ones
        (`Family.conditional`) override this."""
        assert condition is None, "an unconditional family was given a condition"
        return self.decode(z)

    def latent_code(self, batch: Any) -> LatentCode:
        """The code of each input of a batch on the network's device, deterministic (no noise):
        the posterior mean (B, L) and, for families with a posterior q(z|x), its standard deviation
        (B, L); a deterministic autoencoder gives its code and `std=None`. The mean is the code the
        family's `score` decodes (`ScoreTerms.latent_mean`), and `decode(mean)` gives that
        reconstruction: `/encode` and `/interpolate` rely on both (see `model.latent`)."""
        raise NotImplementedError


class ElboNetwork(FamilyNetwork):
    """A family network trained on the negative ELBO with one posterior draw per row: the VAE, the
    β-VAE, the CVAE and the hierarchical VAE share this `forward` and `objective` and differ in
    `elbo_parts` (their model) and `kl_weight` (β) only. The IWAE overrides both: its training bound
    is another one."""

    def elbo_parts(self, batch: Any, eps: torch.Tensor, encoder_batch: Any = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(E_q log p(x | z), KL(q || p)) per row, (B,), averaged over the noise draws eps (S, B or 1,
        latent_dim); the encoder sees `encoder_batch` (a corrupted view) when given, the likelihood
        always the clean `batch`."""
        raise NotImplementedError

    def kl_weight(self) -> float:
        """The KL term's weight in the training loss once warmed up (β)."""
        return 1.0

    def encoder_view(self, batch: Any, step: TrainStep) -> Any:
        """The batch the encoder sees in training (a corrupted view), or None for the clean one."""
        return None

    def forward(self, batch: Any, step: TrainStep) -> LossTerms:
        """The negative ELBO with the KL weighted by `kl_weight()` times the warm-up weight."""
        view = self.encoder_view(batch, step)
        eps = torch.randn((1, len(batch), self.latent_dim), generator=step.generator).to(batch.x_in.device)
        log_px, kl = self.elbo_parts(batch, eps, view)
        weight = self.kl_weight() * step.warmup
        return LossTerms(loss=-(log_px - weight * kl), reconstruction=-log_px, regulariser=kl)

    def objective(self, batch: Any, noise: torch.Tensor) -> torch.Tensor:
        """The ELBO with the fixed validation draws `noise`."""
        log_px, kl = self.elbo_parts(batch, noise)
        return log_px - kl


def variational_score_terms(
    method: ScoreMethod,
    elbo: torch.Tensor,
    log_weights: torch.Tensor,
    contributions: torch.Tensor,
    latent_mean: torch.Tensor,
    expected: Any,
) -> ScoreTerms:
    """The scores every variational family offers, from its own terms, so the three methods mean the
    same thing in every family: "elbo" scores -elbo (B,); "iwae" minus the importance-weighted bound
    log (1/S) sum_s w_s from the S log weights `log_weights` (S, B) (Burda et al. 2016, eq. 8);
    "reconstruction" the NLL at the posterior mean, the sum of `contributions` (B, F)."""
    if method == "iwae":
        score = -(torch.logsumexp(log_weights.double(), dim=0) - math.log(log_weights.shape[0]))
    elif method == "reconstruction":
        score = contributions.sum(-1)
    else:
        score = -elbo
    return ScoreTerms(
        score=score.cpu().numpy(),
        elbo=elbo.cpu().numpy(),
        reconstruction_error=contributions.sum(-1).cpu().numpy(),
        contributions=contributions.cpu().numpy(),
        latent_mean=latent_mean.double().cpu().numpy(),
        expected=expected.cpu(),
    )


@dataclass(frozen=True)
class Family:
    """A registered family: its config model, how to build its network, what it can do."""

    name: str
    config_model: type[FamilyConfig]
    build: Callable[[DataKind, Any], FamilyNetwork]
    summary: str
    score_methods: tuple[ScoreMethod, ...]
    default_score: ScoreMethod
    can_sample: bool
    cannot_sample_reason: str = ""
    conditional: bool = False
    """Models x given a condition c (the kind's `condition_spec`): trained only on a kind that has
    one, and `/sample` needs a `condition`."""

    def option_names(self) -> set[str]:
        """The family's own options (its config's fields except the generic latent size)."""
        return set(self.config_model.model_fields) - {"latent_dim"}
