"""The conditional VAE family `cvae`: the ELBO of x given a condition c (a context such as a
segment, a machine, an image's label), with c fed to both the encoder and the decoder.

Sohn, Lee & Yan, "Learning Structured Output Representation using Deep Conditional Generative
Models" (2015), eq. 4 with the prior p(z|c) = N(0, I) (Kingma et al. 2014, "M2"):

    log p(x | c) >= E_q(z|x,c)[log p(x | z, c)] - KL(q(z | x, c) || N(0, I))

The kind supplies c as `batch.condition` (B, C), the one-hot encoding of its `condition_spec()`
(tabular `--condition-columns`, the image label); c is an input only: the likelihood covers x
alone, so a condition is never scored or explained. The score is -ELBO of x given c: a value that
is normal in one context and rare in another scores high only in the other, which an unconditional
VAE, modelling the mixture over contexts, cannot tell.

Where c enters: the kind's encoder body gives h (B, H) from x; a hidden layer on [h, c] then the
Gaussian head give q(z | x, c); the kind's decoder is built for an (L + C)-wide input and decodes
[z, c]. The backbones stay the kinds' own, unchanged.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from vae_anomaly.model.distributions import LATENT_LOGVAR_RANGE, gaussian_kl, log_normal, log_standard_normal
from vae_anomaly.model.errors import UnsupportedError
from vae_anomaly.model.families.base import (
    ElboNetwork,
    Family,
    KLWarmupConfig,
    variational_score_terms,
)
from vae_anomaly.model.kinds.base import DataKind
from vae_anomaly.model.latent import LatentCode
from vae_anomaly.model.scoring import ScoreMethod, ScoreTerms


class CVAEConfig(KLWarmupConfig):
    """The CVAE: β = 1, the KL weight ramped up over `kl_warmup_epochs`. Which condition it uses is
    the kind's (`--condition-columns` of tabular models, the label of image models) and is recorded
    in the kind's manifest section."""


def _with_condition(z: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
    """[z, c]: z (..., B, L) and c (B, C) → (..., B, L + C), c repeated over z's leading draws."""
    return torch.cat([z, condition.expand(*z.shape[:-1], condition.shape[-1])], dim=-1)


class CVAENetwork(ElboNetwork):
    """q(z | x, c) and p(x | z, c) around the kind's backbone; see the module docstring."""

    def __init__(self, kind: DataKind, config: CVAEConfig):
        super().__init__()
        spec = kind.condition_spec()
        if spec is None:
            raise UnsupportedError(
                f"family 'cvae' models x given a condition, and this {kind.name} model has none: "
                "train tabular models with --condition-columns COL[,COL...], image models on labelled "
                "images (sub-folders, y of an .npz, or an IDX labels file)",
                "condition",
                "no_condition",
            )
        self.kind = kind
        self.config = config
        self.latent_dim = config.latent_dim
        self.condition_dim = spec.width
        features = kind.feature_dim()
        self.encoder = kind.build_encoder()
        self.head = nn.Sequential(
            nn.Linear(features + self.condition_dim, features),
            nn.SiLU(),
            nn.Linear(features, 2 * config.latent_dim),
        )
        self.decoder = kind.build_decoder(config.latent_dim + self.condition_dim)

    def encode(self, batch: Any, encoder_batch: Any = None) -> tuple[torch.Tensor, torch.Tensor]:
        """q(z | x, c): mu, logvar (B, L), logvar clamped to `LATENT_LOGVAR_RANGE`; x from
        `encoder_batch` when given (see `ElboNetwork.elbo_parts`), c always from `batch`."""
        h = self.encoder((encoder_batch if encoder_batch is not None else batch).x_in)  # (B, H)
        mu, logvar = self.head(torch.cat([h, batch.condition], dim=-1)).chunk(2, dim=-1)
        return mu, logvar.clamp(*LATENT_LOGVAR_RANGE)

    def latent_code(self, batch: Any) -> LatentCode:
        """mu and sigma = exp(logvar / 2) of q(z | x, c), logvar clamped as in scoring."""
        mu, logvar = self.encode(batch)
        return LatentCode(mu.double().cpu().numpy(), torch.exp(0.5 * logvar.double()).cpu().numpy())

    def decode(self, z: torch.Tensor) -> Any:
        raise UnsupportedError(
            "a cvae decodes a code given a condition: give the 'condition'", "condition", "missing_condition"
        )

    def decode_given(self, z: torch.Tensor, condition: torch.Tensor | None) -> Any:
        """p(x | z, c) for z (..., B, L) and c (B, C)."""
        if condition is None:
            return self.decode(z)
        return self.decoder(_with_condition(z, condition))

    def log_px(self, decoded: Any, batch: Any) -> torch.Tensor:
        """log p(x | z, c) summed over the input's elements, (..., B)."""
        return self.kind.log_likelihood(decoded, batch).sum(-1)

    def elbo_parts(self, batch: Any, eps: torch.Tensor, encoder_batch: Any = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(E log p(x | z, c), KL(q(z | x, c) || N(0, I))) per row for the noise eps (S, B or 1, L);
        the training loss and the validation objective are `ElboNetwork`'s."""
        mu, logvar = self.encode(batch, encoder_batch)
        z = mu + torch.exp(0.5 * logvar) * eps  # (S, B, L)
        return self.log_px(self.decode_given(z, batch.condition), batch).mean(0), gaussian_kl(mu, logvar)

    @torch.inference_mode()
    def score(self, batch: Any, noise: torch.Tensor, method: ScoreMethod) -> ScoreTerms:
        """As the VAE's score (`model.families.vae`), every term given the batch's condition:
        elbo = E_q[log p(x | z, c)] - KL; score -elbo, or minus the importance-weighted bound
        (method "iwae", Burda et al. 2016, eq. 8), or the reconstruction NLL at z = mu."""
        condition = batch.condition
        mu, logvar = self.encode(batch)  # (B, L)
        z = mu + torch.exp(0.5 * logvar) * noise  # (S, B, L)
        log_px = self.log_px(self.decode_given(z, condition), batch)  # (S, B)
        kl = gaussian_kl(mu, logvar)  # (B,)
        elbo = log_px.double().mean(0) - kl.double()
        expected = self.decode_given(mu, condition)
        contributions = -self.kind.log_likelihood(expected, batch).double()  # (B, F)
        log_w = log_px + log_standard_normal(z) - log_normal(z, mu, logvar)  # (S, B)
        return variational_score_terms(method, elbo, log_w, contributions, mu, expected)


CVAE = Family(
    name="cvae",
    config_model=CVAEConfig,
    build=CVAENetwork,
    summary="conditional VAE: ELBO of x given a condition (tabular --condition-columns, the image label)",
    score_methods=("elbo", "iwae", "reconstruction"),
    default_score="elbo",
    can_sample=True,
    conditional=True,
)
