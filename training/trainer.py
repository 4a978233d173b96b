"""The training loop: Adam on mini-batches, KL warm-up, beta, early stopping, then calibration.

`fit_detector` is the one entry point the CLI and the benchmarks call, so "what `vae-anomaly train`
does" and "what the benchmark measures" cannot drift apart.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from tqdm.auto import tqdm

from model.artifact import Manifest, library_versions, utc_now
from model.detector import Detector, resolve_device, score_columns
from model.image_detector import ImageDetector
from model.image_vae import ImageVAE, PixelLikelihood
from model.images import ImageBatch
from model.likelihoods import gaussian_kl, log_probs
from model.preprocessing import Columns, EncodedBatch, TabularCodec, check_columns, fit_preprocessing
from model.schema import Schema, infer_schema
from model.scoring import ScoringConfig, posterior_noise
from model.thresholds import DEFAULT_TARGETS, ThresholdSet, fpr_guaranteed, sort_calibration
from model.vae import TabularVAE, VAEConfig
from training.data import split_rows

logger = logging.getLogger(__name__)


class TrainConfig(BaseModel):
    """Every knob of a training run; the resolved values go into the manifest."""

    model_config = ConfigDict(extra="forbid")

    epochs: int = Field(default=400, ge=1)
    batch_size: int | None = Field(default=None, ge=1)
    learning_rate: float = Field(default=3e-3, gt=0)
    weight_decay: float = Field(default=0.0, ge=0)
    latent_dim: int | None = Field(default=None, ge=1)
    hidden_dims: list[int] | None = None
    beta: float = Field(default=1.0, ge=0)
    kl_warmup_epochs: int = Field(default=10, ge=0)
    patience: int = Field(default=50, ge=1)
    validation_fraction: float = Field(default=0.1, gt=0, lt=0.5)
    calibration_fraction: float = Field(default=0.2, gt=0, lt=0.5)
    numeric_variance: Literal["feature", "sample", "fixed"] = "feature"
    numeric_logvar_min: float = Field(default=-4.6, le=0.0)
    dropout: float = Field(default=0.0, ge=0, lt=1)
    feature_dropout: float = Field(default=0.0, ge=0, lt=1)
    score_method: Literal["elbo", "iwae", "reconstruction"] = "elbo"
    score_samples: int = Field(default=32, ge=1)
    likelihood: PixelLikelihood = Field(default="gaussian", description="pixel likelihood of image models")
    pixel_logvar_min: float = Field(default=-3.2, le=0.0, description="floor of image pixels' log-variance")
    thresholds: dict[str, float] = Field(default_factory=lambda: dict(DEFAULT_TARGETS))
    active_threshold: str = "warn"
    seed: int = 0
    device: str = "auto"


def network_config(codec: TabularCodec, config: TrainConfig) -> VAEConfig:
    """Resolve the network's sizes from the data's width when the config leaves them open."""
    n_features = len(codec.schema.features)
    latent_dim = config.latent_dim or int(min(16, max(2, math.ceil(n_features / 2))))
    width = int(min(256, max(64, 2 * codec.input_dim)))
    hidden = config.hidden_dims or [width, width // 2]
    return VAEConfig(
        input_dim=codec.input_dim,
        latent_dim=latent_dim,
        hidden_dims=hidden,
        n_numeric=len(codec.numeric),
        category_sizes=codec.category_sizes,
        n_boolean=len(codec.boolean),
        numeric_variance=config.numeric_variance,
        numeric_logvar_min=config.numeric_logvar_min,
        dropout=config.dropout,
    )


VARIANCE_LR_FACTOR = 10.0
"""The per-feature decoder log-variances learn this much faster than the weights. Adam moves a
parameter by at most ~lr per step, and a log-variance may need to travel 5 units (a residual spread
of 0.08 standard deviations): at lr 1e-3 that alone would take thousands of steps."""


VARIANCE_PARAMETERS = ("numeric_logvar", "pixel_logvar")


def make_optimizer(vae: TabularVAE | ImageVAE, config: TrainConfig) -> torch.optim.Optimizer:
    variance = [p for name, p in vae.named_parameters() if name in VARIANCE_PARAMETERS]
    others = [p for name, p in vae.named_parameters() if name not in VARIANCE_PARAMETERS]
    groups: list[dict[str, Any]] = [{"params": others}]
    if variance:
        groups.append({"params": variance, "lr": config.learning_rate * VARIANCE_LR_FACTOR, "weight_decay": 0.0})
    return torch.optim.Adam(groups, lr=config.learning_rate, weight_decay=config.weight_decay)


def auto_batch_size(n_train: int) -> int:
    """About 16 steps per epoch, within [32, 512]: small data sets still get enough gradient steps
    per epoch for the decoder variances to converge, large ones are not slowed by tiny batches."""
    return int(min(512, max(32, n_train // 16)))


@dataclass
class TrainResult:
    detector: Detector | ImageDetector
    summary: dict[str, Any]


Network = TabularVAE | ImageVAE
Batch = EncodedBatch | ImageBatch


def _elbo_parts(vae: Network, codec: TabularCodec | None, batch: Batch, eps: torch.Tensor):
    """(E log p(x|z), KL) per row for the given noise eps (S, B or 1, L)."""
    mu, logvar = vae.encode(batch.x_in)
    z = vae.reparameterize(mu, logvar, eps)
    log_px = log_probs(codec, vae.decode(z), batch).sum(-1).mean(0)
    return log_px, gaussian_kl(mu, logvar)


def _mean_elbo(vae: Network, codec: TabularCodec | None, batch: Batch, eps: torch.Tensor, size: int) -> float:
    vae.eval()
    total = 0.0
    with torch.inference_mode():
        for start in range(0, len(batch), size):
            log_px, kl = _elbo_parts(vae, codec, batch.slice(start, start + size), eps)
            total += float((log_px - kl).sum())
    return total / max(len(batch), 1)


def _hide_features(batch: EncodedBatch, owners: torch.Tensor, rate: float, generator: torch.Generator) -> EncodedBatch:
    """Denoising training: hide a random share of features from the encoder (values and indicators),
    while the likelihood still counts them, so the model learns to impute what it cannot see."""
    n_features = int(owners.max()) + 1
    keep = (torch.rand((len(batch), n_features), generator=generator) >= rate).to(batch.x_in.device)
    hidden = EncodedBatch(**batch.__dict__)
    hidden.x_in = batch.x_in * keep[:, owners].float()
    return hidden


def _train_epochs(
    vae: Network,
    codec: TabularCodec | None,
    train: Batch,
    validation: Batch,
    validation_noise: torch.Tensor,
    owners: torch.Tensor | None,
    batch_size: int,
    config: TrainConfig,
    epochs: tqdm,
    eval_chunk: int = 4096,
) -> tuple[list[dict[str, float]], int, float]:
    """Train until early stopping; leaves `vae` holding the weights of the best validation epoch.

    Returns the per-epoch history, the best epoch and its validation ELBO (nats per row).
    """
    device = train.x_in.device
    latent_dim = vae.config.latent_dim
    optimizer = make_optimizer(vae, config)
    generator = torch.Generator().manual_seed(config.seed)
    warmup_steps = config.kl_warmup_epochs * math.ceil(len(train) / batch_size)
    best_elbo, best_epoch, best_state = -math.inf, 0, None
    history: list[dict[str, float]] = []
    step = 0
    for epoch in epochs:
        vae.train()
        order = torch.randperm(len(train), generator=generator).to(device)
        recon_sum = torch.zeros((), device=device)  # summed on the device: no sync per step
        kl_sum = torch.zeros((), device=device)
        for start in range(0, len(train), batch_size):
            index = order[start : start + batch_size]
            batch = train.select(index)
            if config.feature_dropout > 0 and isinstance(batch, EncodedBatch) and owners is not None:
                batch = _hide_features(batch, owners, config.feature_dropout, generator)
            eps = torch.randn((1, len(index), latent_dim), generator=generator).to(device)
            log_px, kl = _elbo_parts(vae, codec, batch, eps)
            weight = config.beta * (min(1.0, (step + 1) / warmup_steps) if warmup_steps else 1.0)
            loss = -(log_px - weight * kl).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            recon_sum += -log_px.detach().sum()
            kl_sum += kl.detach().sum()
        val_elbo = _mean_elbo(vae, codec, validation, validation_noise, eval_chunk)
        record = {
            "epoch": epoch,
            "train_recon": float(recon_sum) / len(train),
            "train_kl": float(kl_sum) / len(train),
            "validation_elbo": val_elbo,
        }
        history.append(record)
        epochs.set_postfix(
            recon=f"{record['train_recon']:.3f}", kl=f"{record['train_kl']:.3f}", val_elbo=f"{val_elbo:.3f}"
        )
        # Early stopping only counts once the KL weight has reached its final value.
        if val_elbo > best_elbo or epoch <= config.kl_warmup_epochs:
            best_elbo, best_epoch = val_elbo, epoch
            best_state = {k: v.detach().clone() for k, v in vae.state_dict().items()}
        elif epoch - best_epoch >= config.patience:
            break
    epochs.close()
    assert best_state is not None
    vae.load_state_dict(best_state)
    return history, best_epoch, best_elbo


def calibrated_fields(scores: np.ndarray, config: TrainConfig, version: str | None, n: int) -> dict[str, Any]:
    """Thresholds at the configured target rates from calibration scores, plus the manifest's
    version fields; warns where the calibration split is too small to guarantee a rate."""
    calibration = sort_calibration(scores)
    if config.active_threshold not in config.thresholds:
        raise ValueError(f"active threshold {config.active_threshold!r} is not among {sorted(config.thresholds)}")
    thresholds = ThresholdSet.from_targets(calibration, config.thresholds, config.active_threshold)
    for name, fpr in config.thresholds.items():
        if not fpr_guaranteed(calibration.size, fpr):
            logger.warning(
                "threshold %s: %d calibration rows cannot guarantee a %.4g false-positive rate "
                "(needs at least %d); it is set at the largest calibration score",
                name,
                n,
                fpr,
                math.ceil(1 / fpr) - 1,
            )
    created = utc_now()
    return {
        "created_at": created,
        "version": version or created.replace("-", "").replace(":", ""),
        "thresholds": thresholds.thresholds,
        "active_threshold": thresholds.active,
        "calibration_scores": calibration.tolist(),
    }


@dataclass
class TrainingRun:
    """What `train_network` reports about the loop it ran."""

    history: list[dict[str, float]]
    best_epoch: int
    best_elbo: float  # validation ELBO of the best epoch, nats per row or image
    train_elbo: float  # of the best epoch's weights on the training split
    batch_size: int


def train_network(
    vae: Network,
    codec: TabularCodec | None,
    train: Batch,
    validation: Batch,
    owners: torch.Tensor | None,
    config: TrainConfig,
    progress: bool,
    eval_chunk: int = 4096,
) -> TrainingRun:
    """The training loop with its set-up (batch size, validation noise, progress bar), shared by
    tabular and image models; leaves `vae` in eval mode holding the best epoch's weights."""
    validation_noise = posterior_noise(8, vae.config.latent_dim, config.seed + 1).to(train.x_in.device)
    batch_size = config.batch_size or auto_batch_size(len(train))
    progress_bar = tqdm(
        range(1, config.epochs + 1), desc="training", unit="epoch", disable=None if progress else True, leave=False
    )
    history, best_epoch, best_elbo = _train_epochs(
        vae, codec, train, validation, validation_noise, owners, batch_size, config, progress_bar, eval_chunk
    )
    vae.eval()
    train_elbo = _mean_elbo(vae, codec, train, validation_noise, eval_chunk)
    return TrainingRun(history, best_epoch, best_elbo, train_elbo, batch_size)


def training_summary(
    split: Any, run: TrainingRun, device: torch.device, config: TrainConfig, started: float
) -> dict[str, Any]:
    """What the manifest's `training` field records about a run."""
    return {
        "rows": {"train": len(split.train), "validation": len(split.validation), "calibration": len(split.calibration)},
        "epochs": len(run.history),
        "best_epoch": run.best_epoch,
        "train_elbo": run.train_elbo,
        "validation_elbo": run.best_elbo,
        "last_epoch": run.history[-1],
        "wall_seconds": round(time.perf_counter() - started, 3),
        "device": str(device),
        "batch_size": run.batch_size,
        "config": config.model_dump(mode="json"),
    }


def unsaved_manifest(fields: dict[str, Any]) -> Manifest:
    """A manifest for a detector that has not been saved yet (no weights file, so no id)."""
    return Manifest.model_validate(
        {**fields, "model_id": "unsaved", "weights_sha256": "", "library_versions": library_versions()}
    )


def fit_detector(
    columns: dict[str, np.ndarray],
    config: TrainConfig,
    schema_overrides: Schema | None = None,
    version: str | None = None,
    progress: bool = True,
) -> TrainResult:
    """Infer the schema, split, train with early stopping, calibrate thresholds; return a Detector.

    `columns` holds only normal rows. Deterministic for a given `config.seed` on the CPU.
    """
    started = time.perf_counter()
    device = resolve_device(config.device)
    schema = infer_schema(columns, schema_overrides)
    checked = check_columns(schema, columns)
    n = len(next(iter(checked.values())))
    split = split_rows(n, config.validation_fraction, config.calibration_fraction, config.seed)

    def rows(index: np.ndarray) -> Columns:
        return {name: values[index] for name, values in checked.items()}

    preprocessing = fit_preprocessing(schema, rows(split.train))
    codec = TabularCodec(schema, preprocessing)
    net_config = network_config(codec, config)
    torch.manual_seed(config.seed)
    vae = TabularVAE(net_config).to(device)
    train = codec.encode(rows(split.train)).to(device)
    validation = codec.encode(rows(split.validation)).to(device)
    owners = torch.from_numpy(codec.input_feature_index()).to(device)
    run = train_network(vae, codec, train, validation, owners, config, progress)

    scoring = ScoringConfig(method=config.score_method, n_samples=config.score_samples, seed=config.seed)
    noise = posterior_noise(scoring.n_samples, net_config.latent_dim, scoring.seed).to(device)
    calibration = score_columns(vae, codec, rows(split.calibration), noise, scoring).score
    fields = calibrated_fields(calibration, config, version, len(split.calibration))
    summary = training_summary(split, run, device, config, started)
    fields.update(
        {
            "schema": schema,
            "preprocessing": preprocessing,
            "network": net_config,
            "scoring": scoring,
            "training": summary,
        }
    )
    manifest = unsaved_manifest(fields)
    return TrainResult(detector=Detector(manifest, vae, device), summary=summary)


def training_report(manifest: Manifest, summary: dict[str, Any], unit: str, digits: int) -> list[str]:
    """What `vae-anomaly train` prints after a run: rows (or images) used, epochs, ELBO per `unit`,
    the thresholds and the wall time."""
    rows = summary["rows"]
    lines = [
        f"{unit}s used: {rows['train']} train, {rows['validation']} validation, {rows['calibration']} calibration",
        f"epochs: {summary['epochs']} (best {summary['best_epoch']}), device {summary['device']}",
        f"ELBO per {unit} (nats): train {summary['train_elbo']:.{digits}f}, "
        f"validation {summary['validation_elbo']:.{digits}f}",
    ]
    for name, threshold in manifest.thresholds.items():
        marker = " (active)" if name == manifest.active_threshold else ""
        lines.append(
            f"threshold {name}: score > {threshold.value:.{digits}f} at target FPR {threshold.target_fpr}{marker}"
        )
    lines.append(f"wall time: {summary['wall_seconds']:.1f} s")
    return lines
