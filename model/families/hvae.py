"""The hierarchical VAE family `hvae`: two stochastic layers z2 → z1 → x with top-down inference.

The generative model is p(z2) p(z1 | z2) p(x | z1): z2 ~ N(0, I) (size `top_latent_dim`), z1 given z2
a Gaussian from a small MLP (size `latent_dim`), and x given z1 the kind's decoder and likelihood.
Inference follows the ladder VAE (Sønderby et al., "Ladder Variational Autoencoders", 2016): a
bottom-up pass gives q(z2 | x) and a data-dependent Gaussian for z1; the top-down pass combines the
latter with the prior p(z1 | z2) by precision weighting (their eq. 17-19) into q(z1 | x, z2).

Both layers are reparameterised by standard-normal noise: the network's code space is that noise,
[eps2, eps1] of size `top_latent_dim + latent_dim`. `decode` maps such a vector by ancestral
sampling (z2 = eps2, z1 = mu_p(z2) + sigma_p(z2) * eps1), so prior samples are `decode(N(0, I))`, and
the latent mean of an input is the noise that reproduces its posterior means.

Scores: -ELBO (default), the importance-weighted bound over both layers, or the reconstruction NLL
at the posterior means.
"""

from __future__ import annotations

from typing import Any

import torch
from pydantic import Field
from torch import nn

from vae_anomaly.model.distributions import LATENT_LOGVAR_RANGE, gaussian_kl, log_normal, log_standard_normal
from vae_anomaly.model.families.base import (
    ElboNetwork,
    Family,
    KLWarmupConfig,
    variational_score_terms,
)
from vae_anomaly.model.kinds.base import DataKind
from vae_anomaly.model.latent import LatentCode
from vae_anomaly.model.networks import mlp
from vae_anomaly.model.scoring import ScoreMethod, ScoreTerms


class HVAEConfig(KLWarmupConfig):
    """`latent_dim` is z1's size (what the decoder reads); z2 has `top_latent_dim` dimensions."""

    top_latent_dim: int | None = Field(default=None, ge=1, description="size of z2 (default: half of z1's, at least 1)")
    hidden_dim: int = Field(default=64, ge=1, description="width of the MLPs between the two layers")

    def top_size(self) -> int:
        return self.top_latent_dim or max(1, self.latent_dim // 2)


def _gaussian(params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(..., 2L) → mean, log-variance clamped to `LATENT_LOGVAR_RANGE`."""
    mu, logvar = params.chunk(2, dim=-1)
    return mu, logvar.clamp(*LATENT_LOGVAR_RANGE)


def gaussian_kl_between(
    mu_q: torch.Tensor, logvar_q: torch.Tensor, mu_p: torch.Tensor, logvar_p: torch.Tensor
) -> torch.Tensor:
    """KL(N(mu_q, exp logvar_q) || N(mu_p, exp logvar_p)) summed over the last dim."""
    return 0.5 * torch.sum(
        logvar_p - logvar_q + (logvar_q.exp() + (mu_q - mu_p) ** 2) * torch.exp(-logvar_p) - 1.0, dim=-1
    )


class HierarchicalVAENetwork(ElboNetwork):
    """Kind encoder → bottom-up heads; top-down prior and posterior for z1; kind decoder from z1."""

    def __init__(self, kind: DataKind, config: HVAEConfig):
        super().__init__()
        self.kind = kind
        self.config = config
        self.z1_dim, self.z2_dim = config.latent_dim, config.top_size()
        self.latent_dim = self.z2_dim + self.z1_dim
        self.encoder = kind.build_encoder()
        h = kind.feature_dim()
        self.bottom_up_z1 = nn.Linear(h, 2 * self.z1_dim)  # the data term of q(z1 | x, z2)
        self.bottom_up_z2 = mlp(h, [config.hidden_dim], 2 * self.z2_dim)  # q(z2 | x)
        self.prior_z1 = mlp(self.z2_dim, [config.hidden_dim], 2 * self.z1_dim)  # p(z1 | z2)
        self.decoder = kind.build_decoder(self.z1_dim)

    def split(self, eps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Noise (..., L2 + L1) → (eps2, eps1)."""
        return eps[..., : self.z2_dim], eps[..., self.z2_dim :]

    def decode(self, z: torch.Tensor) -> Any:
        """Code-space noise [eps2, eps1] (..., B, L2 + L1) → the kind's decoder output, by ancestral
        sampling through p(z1 | z2)."""
        eps2, eps1 = self.split(z)
        mu_p, logvar_p = _gaussian(self.prior_z1(eps2))
        return self.decoder(mu_p + torch.exp(0.5 * logvar_p) * eps1)

    def infer(self, x_in: torch.Tensor, eps: torch.Tensor) -> dict[str, torch.Tensor]:
        """Both layers for the noise eps (S, B or 1, L2 + L1): z1, z2 (S, B, ·) and the log-densities
        (S, B) the bounds need, plus the posterior means reached with eps = 0."""
        assert eps.shape[-1] == self.latent_dim, f"noise of size {eps.shape[-1]} for a code of {self.latent_dim}"
        h = self.encoder(x_in)
        mu_d, logvar_d = _gaussian(self.bottom_up_z1(h))  # (B, L1)
        mu_q2, logvar_q2 = _gaussian(self.bottom_up_z2(h))  # (B, L2)
        eps2, eps1 = self.split(eps)
        z2 = mu_q2 + torch.exp(0.5 * logvar_q2) * eps2  # (S, B, L2)
        mu_p, logvar_p = _gaussian(self.prior_z1(z2))  # (S, B, L1)
        # Precision-weighted combination (Sønderby et al. 2016, eq. 18-19).
        precision_d, precision_p = torch.exp(-logvar_d), torch.exp(-logvar_p)
        var_q1 = 1.0 / (precision_d + precision_p)
        mu_q1 = (mu_d * precision_d + mu_p * precision_p) * var_q1
        logvar_q1 = torch.log(var_q1).clamp(*LATENT_LOGVAR_RANGE)
        z1 = mu_q1 + torch.exp(0.5 * logvar_q1) * eps1
        return {
            "z1": z1,
            "code_std": torch.cat(  # q's std in code space: of z2, and of z1 / sigma_p(z2)
                [torch.exp(0.5 * logvar_q2).expand_as(z2), torch.exp(0.5 * (logvar_q1 - logvar_p))], dim=-1
            ),
            "code_eps1": (z1 - mu_p) * torch.exp(-0.5 * logvar_p),  # z1 whitened under p(z1 | z2)
            "z2": z2,
            "kl2": gaussian_kl(mu_q2, logvar_q2),  # (B,)
            "kl1": gaussian_kl_between(mu_q1, logvar_q1, mu_p, logvar_p),  # (S, B), given z2
            "log_ratio": log_standard_normal(z2)
            + log_normal(z1, mu_p, logvar_p)
            - log_normal(z2, mu_q2, logvar_q2)
            - log_normal(z1, mu_q1, logvar_q1),  # (S, B): log p(z1, z2) - log q(z1, z2 | x)
        }

    def latent_code(self, batch: Any) -> LatentCode:
        """The code-space point [mu_q2, whitened mean of z1] that `decode` maps to the posterior
        means (what `score` decodes), and q's standard deviation in those coordinates."""
        zero = torch.zeros((1, len(batch), self.latent_dim), device=batch.x_in.device)
        means = self.infer(batch.x_in, zero)
        code = torch.cat([means["z2"][0], means["code_eps1"][0]], dim=-1)
        return LatentCode(code.double().cpu().numpy(), means["code_std"][0].double().cpu().numpy())

    def log_px(self, z1: torch.Tensor, batch: Any) -> torch.Tensor:
        return self.kind.log_likelihood(self.decoder(z1), batch).sum(-1)

    def elbo_parts(self, batch: Any, eps: torch.Tensor, encoder_batch: Any = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(E log p(x | z1), KL of both layers) per row, (B,), averaged over the noise draws; the
        training loss (both KL terms under the warm-up weight) and the validation objective are
        `ElboNetwork`'s."""
        parts = self.infer((encoder_batch if encoder_batch is not None else batch).x_in, eps)
        log_px = self.log_px(parts["z1"], batch)
        return log_px.mean(0), parts["kl2"] + parts["kl1"].mean(0)

    @torch.inference_mode()
    def score(self, batch: Any, noise: torch.Tensor, method: ScoreMethod) -> ScoreTerms:
        """elbo = E_q[log p(x | z1)] - KL(q(z2|x) || p(z2)) - E_q[KL(q(z1|x,z2) || p(z1|z2))] over the S
        fixed draws; "iwae" scores minus log (1/S) sum_s p(x, z1_s, z2_s) / q(z1_s, z2_s | x);
        "reconstruction" the NLL at the posterior means (eps = 0), whose terms are the contributions."""
        parts = self.infer(batch.x_in, noise)
        log_px = self.log_px(parts["z1"], batch)  # (S, B)
        elbo = log_px.double().mean(0) - parts["kl2"].double() - parts["kl1"].double().mean(0)
        zero = torch.zeros((1, len(batch), self.latent_dim), device=batch.x_in.device)
        means = self.infer(batch.x_in, zero)  # z2 = mu_q2, z1 = the mean of q(z1 | x, z2 = mu_q2)
        expected = self.decoder(means["z1"][0])
        contributions = -self.kind.log_likelihood(expected, batch).double()  # (B, F)
        # the code-space point that `decode` maps to the posterior means: [mu_q2, whitened z1]
        code = torch.cat([means["z2"][0], means["code_eps1"][0]], dim=-1)
        return variational_score_terms(method, elbo, log_px + parts["log_ratio"], contributions, code, expected)


HVAE = Family(
    name="hvae",
    config_model=HVAEConfig,
    build=HierarchicalVAENetwork,
    summary="hierarchical VAE: two stochastic layers z2 → z1 → x, ladder-style top-down inference",
    score_methods=("elbo", "iwae", "reconstruction"),
    default_score="elbo",
    can_sample=True,
)
