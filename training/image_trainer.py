"""Training an image VAE: the tabular trainer's loop, split, calibration and manifest, with the
convolutional network, pixel likelihoods and the per-pixel baseline that heatmaps are measured
against. `fit_image_detector` is what `vae-anomaly train` runs on images and what the MNIST
benchmark calls."""

from __future__ import annotations

import time

import numpy as np
import torch

from model.base_detector import resolve_device
from model.image_detector import ImageDetector, score_images
from model.image_vae import ImageVAE, image_network_config
from model.images import ImageBatch, ImageSpec, PixelBaseline
from model.scoring import ScoringConfig, posterior_noise
from training.data import split_rows
from training.trainer import (
    TrainConfig,
    TrainResult,
    calibrated_fields,
    train_network,
    training_summary,
    unsaved_manifest,
)

DECODER_PASSES_PER_CHUNK = 2048
"""Images × posterior draws decoded at once when scoring: bounds memory (≈ 100 MB of activations
for 28×28) whatever the batch size."""

EVAL_CHUNK = 256


def pixel_baseline(contributions: np.ndarray) -> PixelBaseline:
    """Mean per-pixel error of calibration images, and the 99.9th percentile of their positive
    excess over it as the heatmap's full scale."""
    mean = contributions.mean(axis=0)
    excess = np.clip(contributions - mean, 0.0, None)
    scale = float(np.quantile(excess, 0.999)) if excess.size else 1.0
    return PixelBaseline(mean=mean.tolist(), scale=max(scale, 1e-3))


def fit_image_detector(
    images: np.ndarray,
    spec: ImageSpec,
    config: TrainConfig,
    version: str | None = None,
    progress: bool = True,
) -> TrainResult:
    """Train on normal images (N, C, H, W) float32 in [0, 1], already in `spec`'s geometry; split
    70/10/20 like tables, train with early stopping, calibrate thresholds and the pixel baseline."""
    started = time.perf_counter()
    if images.ndim != 4 or images.shape[1:] != spec.shape:
        raise ValueError(f"expected images of shape (N, {', '.join(map(str, spec.shape))}), got {images.shape}")
    device = resolve_device(config.device)
    split = split_rows(len(images), config.validation_fraction, config.calibration_fraction, config.seed)
    net_config = image_network_config(
        spec.channels,
        spec.height,
        spec.width,
        config.latent_dim,
        likelihood=config.likelihood,
        pixel_logvar_min=config.pixel_logvar_min,
    )
    torch.manual_seed(config.seed)
    vae = ImageVAE(net_config).to(device)
    train = ImageBatch.from_numpy(images[split.train]).to(device)
    validation = ImageBatch.from_numpy(images[split.validation]).to(device)
    run = train_network(vae, None, train, validation, None, config, progress, EVAL_CHUNK)

    scoring = ScoringConfig(
        method=config.score_method,
        n_samples=config.score_samples,
        seed=config.seed,
        chunk_size=max(1, DECODER_PASSES_PER_CHUNK // config.score_samples),
    )
    noise = posterior_noise(scoring.n_samples, net_config.latent_dim, scoring.seed).to(device)
    calibration = score_images(vae, images[split.calibration], noise, scoring)
    fields = calibrated_fields(calibration.score, config, version, len(split.calibration))
    summary = training_summary(split, run, device, config, started)
    fields.update(
        {
            "kind": "image",
            "image": spec,
            "pixel_baseline": pixel_baseline(calibration.contributions),
            "network": net_config,
            "scoring": scoring,
            "training": summary,
        }
    )
    return TrainResult(detector=ImageDetector(unsaved_manifest(fields), vae, device), summary=summary)


IMAGE_DEFAULTS = {"epochs": 100, "patience": 20, "score_samples": 8}
"""Where image training departs from the tabular defaults of `TrainConfig`, and why:
- epochs 100 / patience 20: the validation ELBO of a conv VAE on a few hundred images peaks within
  a few dozen epochs (MNIST digits: best epochs 25-30 at lr 3e-3), and an image epoch costs far more
  than a tabular one;
- 8 posterior draws for the score instead of 32: every draw is a full decoder pass per image, and
  with antithetic pairs the ELBO of an image moves by well under its spread across images."""


def image_train_config(**fields: object) -> TrainConfig:
    """`TrainConfig` with the image defaults, then `fields` (what `vae-anomaly train` passes)."""
    return TrainConfig(**{**IMAGE_DEFAULTS, **fields})  # type: ignore[arg-type]
