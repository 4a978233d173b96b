"""The family `vae-ensemble`: K plain VAEs trained as one batched network, scored by their mean.

Why: a VAE's detection quality moves a lot with its initialisation (fault, 3 seeds: AUROC ±0.075),
and averaging the scores of independently initialised members removes part of that variance
(Lakshminarayanan et al., "Simple and Scalable Predictive Uncertainty Estimation using Deep
Ensembles", 2017). On a CPU a tiny MLP's Adam step costs mostly per-operation overhead, so the
members are not K networks but one: every `nn.Linear` of the kind's backbone and of the VAE's head
becomes a `GroupedLinear` holding K weight matrices (K, in, out), applied with one batched matmul,
and one Adam step updates all members. Activations carry the member axis at position -3:
x (B, D) → h (K, B, H) → mu, logvar (K, B, L) → z (S, K, B, L) → the kind's decoder output with
leading dims (S, K, B), which a kind's likelihood already broadcasts over (its leading dims follow
z's). This needs an MLP backbone: a kind whose modules hold parameters other than `nn.Linear` and
1-D vectors used by broadcasting (convolutions, recurrent cells) is refused.

Each member starts from its own initialisation (built one after the other from the seeded global
generator) and draws its own posterior noise in training; early stopping follows the members' mean
validation ELBO, so all members keep the weights of one epoch.

Scores: "elbo" is the mean over members of each member's ELBO (score = minus it),
"reconstruction" the mean of the members' NLL at their posterior means; per-feature contributions
are the members' mean. The code (`latent_code`, `ScoreTerms.latent_mean`), the reconstruction
(`expected`) and `decode` (sampling, `/interpolate`) are member 0's: one model's latent space is
meaningful, an average of K unrelated latent spaces is not. Scoring uses the same fixed noise for
every member and record, so it stays deterministic and independent of the batch.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from pydantic import Field
from torch import nn

from vae_anomaly.model.distributions import gaussian_kl, log_normal, log_standard_normal
from vae_anomaly.model.families import FAMILIES
from vae_anomaly.model.families.base import (
    ElboNetwork,
    Family,
    FamilyConfig,
    KLWarmupConfig,
    LossTerms,
    TrainStep,
    variational_score_terms,
)
from vae_anomaly.model.kinds.base import DataKind
from vae_anomaly.model.latent import LatentCode
from vae_anomaly.model.scoring import ScoreMethod, ScoreTerms

MEMBER_AXIS = -3
"""Where the member axis sits in every activation: (..., K, B, features)."""


class EnsembleConfig(KLWarmupConfig):
    """The plain VAE's options (family `vae`, which builds each member) plus the number of members."""

    members: int = Field(default=4, ge=1, le=64, description="VAEs trained side by side, scores averaged")
    feature_dropout: float = Field(
        default=0.0, ge=0, lt=1, description="denoising: share of input elements hidden from the encoder"
    )

    def member_config(self) -> FamilyConfig:
        """The config of one member, a plain VAE."""
        return FAMILIES["vae"].config_model.model_validate(self.model_dump(exclude={"members"}))


class GroupedLinear(nn.Module):
    """K independent linear maps in one module: weight (K, in, out), bias (K, 1, out).

    x (B, in), the same rows for every member, gives (K, B, out); x (..., K, B, in) gives
    (..., K, B, out), member k through its own weights: one batched matmul either way."""

    def __init__(self, layers: list[nn.Linear]):
        super().__init__()
        self.weight = nn.Parameter(torch.stack([layer.weight.detach().t() for layer in layers]).contiguous())
        biases = [
            layer.bias.detach() if layer.bias is not None else torch.zeros(layer.out_features) for layer in layers
        ]
        self.bias = nn.Parameter(torch.stack(biases).unsqueeze(1).contiguous())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.matmul(x, self.weight) + self.bias


def batchable(module: nn.Module) -> bool:
    """Whether `stack_members` can batch this network: every module holding parameters is an
    `nn.Linear` or one of the project's own modules holding 1-D vectors (used by broadcasting, as a
    decoder's per-feature log-variance), and no module keeps buffers. Convolutions, recurrent cells
    and normalisation layers cannot take a member axis."""
    for sub in module.modules():
        if isinstance(sub, nn.Linear):
            continue
        if list(sub.buffers(recurse=False)):
            return False
        own = list(sub.parameters(recurse=False))
        if own and (type(sub).__module__.startswith("torch.") or any(p.dim() != 1 for p in own)):
            return False
    return True


def stack_members(members: Sequence[nn.Module]) -> nn.Module:
    """members[0] with every `nn.Linear` replaced by a `GroupedLinear` of all members' layers and
    every other parameter (a 1-D vector) by the members' stacked values (K, 1, n), which broadcast
    against (..., K, B, n); the other members are spent. Only for `batchable` networks."""
    template = members[0]
    for name, module in list(template.named_modules()):
        counterparts = [member.get_submodule(name) for member in members]
        if isinstance(module, nn.Linear):
            parent, _, child = name.rpartition(".")
            template.get_submodule(parent).register_module(child, GroupedLinear(counterparts))  # type: ignore[arg-type]
            continue
        for pname, _ in list(module.named_parameters(recurse=False)):
            stacked = torch.stack([getattr(c, pname).detach() for c in counterparts]).unsqueeze(1)
            setattr(module, pname, nn.Parameter(stacked.contiguous()))
    return template


def member_view(decoded: Any, member: int) -> Any:
    """One member's part of a kind's decoder output whose tensors are (..., K, B, features): a
    tensor, a list of them, or a dataclass of those."""
    if isinstance(decoded, torch.Tensor):
        return decoded.select(MEMBER_AXIS, member)
    if isinstance(decoded, list):
        return [member_view(part, member) for part in decoded]
    if dataclasses.is_dataclass(decoded) and not isinstance(decoded, type):
        return dataclasses.replace(
            decoded,
            **{field.name: member_view(getattr(decoded, field.name), member) for field in dataclasses.fields(decoded)},
        )
    raise TypeError(f"cannot take a member of a {type(decoded).__name__}")


class EnsembleNetwork(ElboNetwork):
    """K VAEs as one network (see the module docstring): batched (`net`, grouped layers) when the
    kind's backbone is an MLP, else the members side by side (`member_nets`), one after the other
    in each step: the same objective and scores, without the batching's saving."""

    net: Any  # the VAE of family `vae` with grouped layers (batched)
    member_nets: Any  # nn.ModuleList of the members' VAEs (not batched)

    def __init__(self, kind: DataKind, config: EnsembleConfig):
        super().__init__()
        self.config = config
        self.members = config.members
        self.latent_dim = config.latent_dim
        self.kind = kind
        vae, member = FAMILIES["vae"], config.member_config()
        # Each member draws its own initial weights from the global generator (seeded by the trainer).
        built = [vae.build(kind, member) for _ in range(config.members)]
        self.batched = batchable(built[0])
        if self.batched:
            self.net = stack_members(built)
        else:
            self.member_nets = nn.ModuleList(built)

    def _first(self) -> Any:
        """The network whose code and decodings are member 0's (all members' when batched)."""
        return self.net if self.batched else self.member_nets[0]

    def encode(self, x_in: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x_in (B, D) → mu, logvar (K, B, L), every member's posterior (the VAE's `encode`)."""
        if self.batched:
            mu, logvar = self.net.encode(x_in)  # type: ignore[operator]
            return mu, logvar
        codes = [member.encode(x_in) for member in self.member_nets]
        return torch.stack([mu for mu, _ in codes]), torch.stack([logvar for _, logvar in codes])

    def decode(self, z: torch.Tensor) -> Any:
        """z (..., B, L) → member 0's decoding. Batched: the same codes through every member (the
        same kernels as in scoring, so these are the values `score` reports), member 0 kept."""
        if not self.batched:
            return self.member_nets[0].decode(z)
        expanded = z.unsqueeze(MEMBER_AXIS).expand(*z.shape[:-2], self.members, *z.shape[-2:])
        return member_view(self.net.decoder(expanded), 0)

    def latent_code(self, batch: Any) -> LatentCode:
        """Member 0's posterior mean and standard deviation."""
        mu, logvar = self.encode(batch.x_in)
        return LatentCode(mu[0].double().cpu().numpy(), torch.exp(0.5 * logvar[0].double()).cpu().numpy())

    def elbo_parts(self, batch: Any, eps: torch.Tensor, encoder_batch: Any = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The members' mean of E log p(x|z) and of the KL, (B,); eps (S, B or 1, L) is shared by
        the members, eps (S, K, B, L) gives each its own draws."""
        if not self.batched:
            parts = [
                member.elbo_parts(batch, eps[:, k] if eps.dim() == 4 else eps, encoder_batch)
                for k, member in enumerate(self.member_nets)
            ]
            return torch.stack([p for p, _ in parts]).mean(0), torch.stack([kl for _, kl in parts]).mean(0)
        mu, logvar = self.encode((encoder_batch if encoder_batch is not None else batch).x_in)
        if eps.dim() == 3:
            eps = eps.unsqueeze(MEMBER_AXIS)
        z = mu + torch.exp(0.5 * logvar) * eps  # (S, K, B, L)
        log_px = self.kind.log_likelihood(self.net.decoder(z), batch).sum(-1)  # (S, K, B)
        return log_px.mean(0).mean(0), gaussian_kl(mu, logvar).mean(0)

    def encoder_view(self, batch: Any, step: TrainStep) -> Any:
        return self._first().encoder_view(batch, step)

    def forward(self, batch: Any, step: TrainStep) -> LossTerms:
        """The members' mean negative ELBO, each member with its own posterior draw: member k's
        gradient is that of its own loss (scaled by 1/K, which Adam's normalisation undoes)."""
        view = self.encoder_view(batch, step)
        shape = (1, self.members, len(batch), self.latent_dim)
        eps = torch.randn(shape, generator=step.generator).to(batch.x_in.device)
        log_px, kl = self.elbo_parts(batch, eps, view)
        weight = self.kl_weight() * step.warmup
        return LossTerms(loss=-(log_px - weight * kl), reconstruction=-log_px, regulariser=kl)

    @torch.inference_mode()
    def score(self, batch: Any, noise: torch.Tensor, method: ScoreMethod) -> ScoreTerms:
        """The VAE's scores (family `vae`'s `score`) per member, averaged over members; code and
        reconstruction are member 0's. "iwae" is the members' mean importance-weighted bound."""
        if not self.batched:
            return mean_terms([member.score(batch, noise, method) for member in self.member_nets])
        mu, logvar = self.encode(batch.x_in)  # (K, B, L)
        expected = self.net.decoder(mu)
        expected_log_px = self.kind.log_likelihood(expected, batch)  # (K, B, F)
        if noise.shape[0] == 1 and not bool(torch.any(noise)):  # z = mu exactly, as in the VAE's `score`
            z = mu.unsqueeze(0)
            log_px = expected_log_px.sum(-1).unsqueeze(0)  # (1, K, B)
        else:
            z = mu + torch.exp(0.5 * logvar) * noise.unsqueeze(MEMBER_AXIS)  # (S, K, B, L)
            log_px = self.kind.log_likelihood(self.net.decoder(z), batch).sum(-1)  # (S, K, B)
        kl = gaussian_kl(mu, logvar)  # (K, B)
        elbo = (log_px.double().mean(0) - kl.double()).mean(0)
        contributions = -expected_log_px.double().mean(0)  # (B, F)
        log_w = log_px + log_standard_normal(z) - log_normal(z, mu, logvar)  # (S, K, B)
        terms = variational_score_terms(method, elbo, log_w[:, 0], contributions, mu[0], member_view(expected, 0))
        if method == "iwae":
            bound = torch.logsumexp(log_w.double(), dim=0) - math.log(log_w.shape[0])  # (K, B)
            terms.score = (-bound.mean(0)).cpu().numpy()
        return terms


def mean_terms(parts: list[ScoreTerms]) -> ScoreTerms:
    """The members' mean score, ELBO, reconstruction error and contributions; member 0's code and
    reconstruction."""
    return dataclasses.replace(
        parts[0],
        score=np.mean([p.score for p in parts], axis=0),
        elbo=np.mean([p.elbo for p in parts], axis=0),
        reconstruction_error=np.mean([p.reconstruction_error for p in parts], axis=0),
        contributions=np.mean([p.contributions for p in parts], axis=0),
    )


VAE_ENSEMBLE = Family(
    name="vae-ensemble",
    config_model=EnsembleConfig,
    build=EnsembleNetwork,
    summary="K VAEs trained as one batched network (--members), scores averaged",
    score_methods=("elbo", "iwae", "reconstruction"),
    default_score="elbo",
    can_sample=True,
)
