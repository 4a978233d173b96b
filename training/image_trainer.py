"""Training an image VAE: the tabular trainer's loop, split, calibration and manifest, with the
convolutional network, pixel likelihoods and the per-pixel baseline that heatmaps are measured
against. `fit_image_detector` is what `vae-anomaly train` runs on images and what the MNIST
benchmark calls."""

from __future__ import annotations

import time

import numpy as np

from vae_anomaly.model.conditions import ConditionSpec
from vae_anomaly.model.kinds.image.backbone import image_network_config
from vae_anomaly.model.kinds.image.images import ImageBatch, ImageSpec
from vae_anomaly.model.kinds.image.kind import ImageKind, ImageOptions
from vae_anomaly.training.config import IMAGE_DEFAULTS as IMAGE_DEFAULTS  # re-exported (torch-free home)
from vae_anomaly.training.data import split_rows
from vae_anomaly.training.trainer import TrainConfig, TrainResult, fit

DECODER_PASSES_PER_CHUNK = 2048
"""Images × posterior draws decoded at once when scoring: bounds memory (≈ 100 MB of activations
for 28×28) whatever the batch size."""

EVAL_CHUNK = 256


def fit_image_detector(
    images: np.ndarray,
    spec: ImageSpec,
    config: TrainConfig,
    version: str | None = None,
    progress: bool = True,
    condition: ConditionSpec | None = None,
    labels: np.ndarray | None = None,
) -> TrainResult:
    """Train on normal images (N, C, H, W) float32 in [0, 1], already in `spec`'s geometry; split
    70/10/20 like tables, train with early stopping, calibrate thresholds and the pixel baseline.

    A conditional family trains on `labels` (N,), the positions of each image's label in
    `condition` (the label is its condition)."""
    started = time.perf_counter()
    if images.ndim != 4 or images.shape[1:] != spec.shape:
        raise ValueError(f"expected images of shape (N, {', '.join(map(str, spec.shape))}), got {images.shape}")
    options = config.kind_options_for("image")
    assert isinstance(options, ImageOptions)
    split = split_rows(len(images), config.validation_fraction, config.calibration_fraction, config.seed)
    network = image_network_config(
        spec.channels,
        spec.height,
        spec.width,
        likelihood=options.likelihood,
        pixel_logvar_min=options.pixel_logvar_min,
    )
    kind = ImageKind.untrained(spec, network, condition)

    def batch(index: np.ndarray) -> ImageBatch:
        images_batch = ImageBatch.from_numpy(images[index])
        if condition is not None:
            assert labels is not None, "a condition needs each image's label"
            images_batch.condition = condition.one_hot(labels[index][:, None])
        return images_batch

    batches = (batch(split.train), batch(split.validation), batch(split.calibration))
    chunk_size = max(1, DECODER_PASSES_PER_CHUNK // config.score_samples)
    return fit(kind, split, batches, config, version, progress, started, EVAL_CHUNK, chunk_size)


def image_train_config(**fields: object) -> TrainConfig:
    """`TrainConfig` with the image defaults, then `fields` (what `vae-anomaly train` passes)."""
    return TrainConfig(**{**IMAGE_DEFAULTS, **fields})  # type: ignore[arg-type]
