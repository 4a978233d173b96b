"""PHASE-1 PROTOTYPE (replaced by training's fit once the model/ layout lands): a VAE around the
sequence backbone, trained on time-ordered windows, to compare architectures and windows."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from model.kinds.sequence.backbone import SequenceBackboneConfig, build_sequence_backbone
from model.kinds.sequence.likelihood import element_log_probs
from model.kinds.sequence.preprocessing import fit_scaling
from model.kinds.sequence.windows import closing_windows, gather_windows, segment_bounds
from model.thresholds import p_values, sort_calibration, threshold_for_fpr
from training.sequence_data import split_windows


class ProtoVAE(nn.Module):
    def __init__(self, config: SequenceBackboneConfig, latent_dim: int, family: str):
        super().__init__()
        self.encoder, self.decoder = build_sequence_backbone(config, latent_dim)
        self.family = family
        self.head = nn.Linear(config.feature_dim, (2 if family == "vae" else 1) * latent_dim)

    def encode(self, x):
        out = self.head(self.encoder(x))
        if self.family == "vae":
            mu, logvar = out.chunk(2, -1)
            return mu, logvar.clamp(-12, 8)
        return out, None

    def loss(self, x, mask, eps, beta):
        mu, logvar = self.encode(x)
        if logvar is None:
            lp = element_log_probs(self.decoder(mu), x, mask).sum(-1)
            return -lp, lp * 0
        z = mu + torch.exp(0.5 * logvar) * eps
        lp = element_log_probs(self.decoder(z), x, mask).sum(-1)
        kl = -0.5 * torch.sum(1 + logvar - mu**2 - logvar.exp(), -1)
        return -(lp - beta * kl), kl

    @torch.inference_mode()
    def score(self, x, mask, noise):
        self.eval()
        mu, logvar = self.encode(x)
        if logvar is None:
            return -element_log_probs(self.decoder(mu), x, mask).sum(-1).double().numpy()
        z = mu + torch.exp(0.5 * logvar) * noise  # (S, B, L)
        lp = element_log_probs(self.decoder(z), x, mask).sum(-1).double().mean(0)
        kl = -0.5 * torch.sum(1 + logvar - mu**2 - logvar.exp(), -1).double()
        return (-(lp - kl)).numpy()


@dataclass
class ProtoDetector:
    net: ProtoVAE
    scaling: object
    window: int
    calibration: np.ndarray
    threshold: float
    noise: torch.Tensor

    def score_rows(self, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Scores of the rows that close a window, and those rows."""
        z, mask = self.scaling.standardize(values)
        bounds = segment_bounds(None, len(values))
        starts, rows = closing_windows(bounds, self.window)
        x = torch.from_numpy(gather_windows(z, starts, self.window)).float()
        m = torch.from_numpy(gather_windows(mask, starts, self.window))
        scores = np.concatenate(
            [self.net.score(x[i : i + 1024], m[i : i + 1024], self.noise) for i in range(0, len(x), 1024)]
        )
        return scores, rows


def fit_proto(
    values: np.ndarray,
    window: int = 30,
    stride: int = 1,
    calibration_stride: int = 1,
    architecture: str = "conv",
    family: str = "vae",
    latent_dim: int = 8,
    epochs: int = 200,
    patience: int = 30,
    lr: float = 3e-3,
    target_fpr: float = 0.01,
    seed: int = 0,
    validation_fraction: float = 0.1,
    calibration_fraction: float = 0.2,
    hidden_size: int = 64,
    logvar_min: float = -4.6,
    beta: float = 1.0,
) -> ProtoDetector:
    torch.manual_seed(seed)
    sensors = [f"s{i}" for i in range(values.shape[1])]
    bounds = segment_bounds(None, len(values))
    n_train_rows = round(len(values) * (1 - validation_fraction - calibration_fraction))
    scaling = fit_scaling(sensors, values[:n_train_rows])
    z, mask = scaling.standardize(values)
    split = split_windows(z, bounds, window, stride, calibration_stride, validation_fraction, calibration_fraction)
    msplit = split_windows(
        mask.astype(np.float64), bounds, window, stride, calibration_stride, validation_fraction, calibration_fraction
    )
    config = SequenceBackboneConfig(
        window=window,
        sensors=values.shape[1],
        architecture=architecture,
        hidden_size=hidden_size,
        logvar_min=logvar_min,
    )
    net = ProtoVAE(config, latent_dim, family)
    var = [p for n, p in net.named_parameters() if n.endswith("sensor_logvar")]
    other = [p for n, p in net.named_parameters() if not n.endswith("sensor_logvar")]
    opt = torch.optim.Adam([{"params": other}, {"params": var, "lr": lr * 10}], lr=lr)
    gen = torch.Generator().manual_seed(seed)
    tx = torch.from_numpy(split.train).float()
    tm = torch.from_numpy(msplit.train) > 0
    vx = torch.from_numpy(split.validation).float()
    vm = torch.from_numpy(msplit.validation) > 0
    vnoise = torch.randn(8, 1, latent_dim, generator=torch.Generator().manual_seed(seed + 1))
    bs = int(min(512, max(32, len(tx) // 16)))
    best, best_epoch, best_state = math.inf, 0, None
    warm = 10 * math.ceil(len(tx) / bs)
    step = 0
    for epoch in range(1, epochs + 1):
        net.train()
        order = torch.randperm(len(tx), generator=gen)
        for s in range(0, len(tx), bs):
            idx = order[s : s + bs]
            eps = torch.randn(1, len(idx), latent_dim, generator=gen)
            loss, _ = net.loss(tx[idx], tm[idx], eps, beta * min(1.0, (step + 1) / warm))
            opt.zero_grad()
            loss.mean().backward()
            opt.step()
            step += 1
        val = float(net.score(vx, vm, vnoise).mean())
        if val < best or epoch <= 10:
            best, best_epoch = val, epoch
            best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
        elif epoch - best_epoch >= patience:
            break
    net.load_state_dict(best_state)
    noise = torch.randn(16, 1, latent_dim, generator=torch.Generator().manual_seed(seed))
    noise = torch.cat([noise[:8], -noise[:8]])
    cx = torch.from_numpy(split.calibration).float()
    cm = torch.from_numpy(msplit.calibration) > 0
    cal = sort_calibration(net.score(cx, cm, noise))
    return ProtoDetector(net, scaling, window, cal, threshold_for_fpr(cal, target_fpr), noise)


__all__ = ["fit_proto", "p_values"]
