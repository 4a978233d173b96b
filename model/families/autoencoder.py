"""The deterministic autoencoder families: `ae`, `dae` (denoising), `sparse-ae` and `aae` (adversarial).

All four share one network: the kind's encoder, a linear head h → code z (B, L), the kind's decoder
and the kind's likelihood, with its learned variances, so each is a real baseline for the VAE of the
same backbone and training budget: only the objective differs.

- `ae`: minimise -log p(x | z = code), the reconstruction NLL with the kind's likelihood.
- `dae` (Vincent et al., "Extracting and Composing Robust Features with Denoising Autoencoders",
  2008): the encoder sees an input corrupted by the kind's `corrupt` (masking or Gaussian noise,
  `--noise`), the likelihood scores the clean input.
- `sparse-ae` (Ng, "Sparse autoencoder", CS294A notes, 2011, with the L1 form of the penalty):
  the NLL plus `sparsity` * ||z||_1.
- `aae` (Makhzani et al., "Adversarial Autoencoders", 2016): a discriminator tells codes of the
  data from draws of the prior N(0, I); the encoder is trained to fool it, which pulls the code
  distribution onto the prior, so decoding prior draws gives samples.

None has a posterior, so the score is the reconstruction NLL at the code (the AAE also offers
"joint": that plus -log p(code) under the prior), and `ScoreTerms.elbo` reports log p(x | z = code).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import torch
from pydantic import Field, model_validator
from torch import nn

from vae_anomaly.model.distributions import log_standard_normal
from vae_anomaly.model.families.base import Family, FamilyConfig, FamilyNetwork, LossTerms, TrainStep
from vae_anomaly.model.kinds.base import Corruption, DataKind
from vae_anomaly.model.latent import LatentCode
from vae_anomaly.model.networks import mlp
from vae_anomaly.model.scoring import ScoreMethod, ScoreTerms


class AEConfig(FamilyConfig):
    """The plain autoencoder: no options beyond the code size."""

    def corruption(self) -> Corruption | None:
        """The encoder input's corruption during training (denoising families only)."""
        return None

    def code_penalty(self, z: torch.Tensor) -> torch.Tensor:
        """(B,) the penalty on the code added to the training loss (sparse families only)."""
        return torch.zeros(z.shape[:-1], device=z.device)


class DAEConfig(AEConfig):
    """The denoising autoencoder: `noise` is the masking share or the Gaussian standard deviation."""

    noise: float = Field(
        default=0.2, gt=0, description="masking: share of input elements hidden; gaussian: noise std (input units)"
    )
    noise_type: Literal["masking", "gaussian"] = Field(default="masking", description="how the input is corrupted")

    @model_validator(mode="after")
    def _masking_share_below_one(self) -> DAEConfig:
        if self.noise_type == "masking" and self.noise >= 1:
            raise ValueError(f"noise {self.noise} must be below 1 for masking (it is the share of inputs hidden)")
        return self

    def corruption(self) -> Corruption | None:
        return Corruption(self.noise_type, self.noise)


class SparseAEConfig(AEConfig):
    """The sparse autoencoder: an L1 penalty of weight `sparsity` on the code."""

    sparsity: float = Field(default=1e-2, ge=0, description="weight of the L1 penalty on the code")

    def code_penalty(self, z: torch.Tensor) -> torch.Tensor:
        return self.sparsity * z.abs().sum(-1)


class AAEConfig(AEConfig):
    """The adversarial autoencoder: the discriminator's widths and the adversarial weight."""

    adversarial_weight: float = Field(default=1.0, gt=0, description="weight of the discriminator loss")
    discriminator_dims: list[Annotated[int, Field(gt=0)]] = Field(
        default_factory=lambda: [64, 64], min_length=1, description="hidden layer widths of the discriminator D(z)"
    )


class AutoencoderNetwork(FamilyNetwork):
    """Kind encoder → Linear(H, L) code → kind decoder; the training loss is the family's."""

    def __init__(self, kind: DataKind, config: AEConfig):
        super().__init__()
        self.kind = kind
        self.config = config
        self.latent_dim = config.latent_dim
        self.encoder = kind.build_encoder()
        self.head = nn.Linear(kind.feature_dim(), config.latent_dim)
        self.decoder = kind.build_decoder(config.latent_dim)
        self.corruption = config.corruption()

    def encode(self, x_in: torch.Tensor) -> torch.Tensor:
        """x_in → the code z (B, L)."""
        return self.head(self.encoder(x_in))

    def decode(self, z: torch.Tensor) -> Any:
        return self.decoder(z)

    def latent_code(self, batch: Any) -> LatentCode:
        """The code itself; no std, since there is no posterior distribution."""
        return LatentCode(self.encode(batch.x_in).double().cpu().numpy())

    def log_px(self, batch: Any, z: torch.Tensor) -> torch.Tensor:
        """log p(x | z) summed over the input's elements, (B,)."""
        return self.kind.log_likelihood(self.decode(z), batch).sum(-1)

    def adversarial_loss(self, z: torch.Tensor, step: TrainStep) -> torch.Tensor:
        """(B,) an extra training term on the code (the AAE's discriminator); 0 here."""
        return torch.zeros(z.shape[:-1], device=z.device)

    def forward(self, batch: Any, step: TrainStep) -> LossTerms:
        """-log p(x | z = code) plus the code penalty and the adversarial term; the encoder sees the
        corrupted view when the family corrupts, the likelihood the clean batch."""
        view = batch if self.corruption is None else self.kind.corrupt(batch, self.corruption, step.generator)
        z = self.encode(view.x_in)
        nll = -self.log_px(batch, z)
        penalty = self.config.code_penalty(z)
        return LossTerms(loss=nll + penalty + self.adversarial_loss(z, step), reconstruction=nll, regulariser=penalty)

    def objective(self, batch: Any, noise: torch.Tensor) -> torch.Tensor:
        """log p(x | z = code) of the clean input (noise unused: the code is deterministic)."""
        return self.log_px(batch, self.encode(batch.x_in))

    @torch.inference_mode()
    def score(self, batch: Any, noise: torch.Tensor, method: ScoreMethod) -> ScoreTerms:
        """The reconstruction NLL at the code, -log p(x | z = code), whose per-element terms are the
        contributions; method "joint" adds -log N(code; 0, I) (a code far from the prior's mass is
        suspicious too: AAE only). The noise is unused, so the score is deterministic."""
        z = self.encode(batch.x_in)  # (B, L)
        expected = self.decode(z)
        contributions = -self.kind.log_likelihood(expected, batch).double()  # (B, F)
        log_px = -contributions.sum(-1)
        score = -log_px
        if method == "joint":
            score = score - log_standard_normal(z).double()
        return ScoreTerms(
            score=score.cpu().numpy(),
            elbo=log_px.cpu().numpy(),
            reconstruction_error=(-log_px).cpu().numpy(),
            contributions=contributions.cpu().numpy(),
            latent_mean=z.double().cpu().numpy(),
            expected=expected.cpu(),
        )


class _ReverseGradient(torch.autograd.Function):
    """Identity forward; the gradient times -1 backward (Ganin & Lempitsky, "Unsupervised Domain
    Adaptation by Backpropagation", 2015): one loss trains a discriminator and the encoder against it."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        return -grad


class AdversarialAutoencoderNetwork(AutoencoderNetwork):
    """The autoencoder plus a discriminator D(z) → logit that a code was drawn from N(0, I).

    The adversarial game of Makhzani et al. (2016, section 2) runs inside `forward`, so the trainer
    keeps its one optimizer and one loss: the discriminator's cross-entropy on (prior draws: 1, codes:
    0) is added to the loss, with the codes passed through a gradient reversal. The discriminator's
    weights descend that loss (learn to tell them apart), the encoder's ascend it (make codes look like
    prior draws): the minimax of the original GAN objective, in one backward pass.
    """

    def __init__(self, kind: DataKind, config: AAEConfig):
        super().__init__(kind, config)
        self.adversarial_weight = config.adversarial_weight
        self.discriminator = mlp(config.latent_dim, config.discriminator_dims, 1)

    def adversarial_loss(self, z: torch.Tensor, step: TrainStep) -> torch.Tensor:
        prior = torch.randn(z.shape, generator=step.generator).to(z.device)
        logit_code = self.discriminator(_ReverseGradient.apply(z)).squeeze(-1)  # (B,)
        logit_prior = self.discriminator(prior).squeeze(-1)  # (B,)
        bce = nn.functional.binary_cross_entropy_with_logits
        loss = bce(logit_prior, torch.ones_like(logit_prior), reduction="none") + bce(
            logit_code, torch.zeros_like(logit_code), reduction="none"
        )
        return self.adversarial_weight * step.warmup * loss


NO_PRIOR = (
    "a deterministic autoencoder learns no distribution over its code, so there is nothing to draw from; "
    "train --family vae (or aae, iwae, hvae) to sample"
)

AE = Family(
    name="ae",
    config_model=AEConfig,
    build=AutoencoderNetwork,
    summary="deterministic autoencoder: reconstruction NLL with the kind's likelihood",
    score_methods=("reconstruction",),
    default_score="reconstruction",
    can_sample=False,
    cannot_sample_reason=NO_PRIOR,
)

DAE = Family(
    name="dae",
    config_model=DAEConfig,
    build=AutoencoderNetwork,
    summary="denoising autoencoder: corrupted input (--noise, --noise-type), clean reconstruction target",
    score_methods=("reconstruction",),
    default_score="reconstruction",
    can_sample=False,
    cannot_sample_reason=NO_PRIOR,
)

SPARSE_AE = Family(
    name="sparse-ae",
    config_model=SparseAEConfig,
    build=AutoencoderNetwork,
    summary="sparse autoencoder: reconstruction NLL plus --sparsity times the L1 norm of the code",
    score_methods=("reconstruction",),
    default_score="reconstruction",
    can_sample=False,
    cannot_sample_reason=NO_PRIOR,
)

AAE = Family(
    name="aae",
    config_model=AAEConfig,
    build=AdversarialAutoencoderNetwork,
    summary="adversarial autoencoder: a discriminator matches the code distribution to N(0, I)",
    score_methods=("reconstruction", "joint"),
    default_score="reconstruction",
    can_sample=True,
)
