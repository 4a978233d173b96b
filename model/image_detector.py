"""`ImageDetector`: a loaded image model ready to score, reconstruct, sample and encode.

The image counterpart of `model.detector.Detector`, with the same scores, thresholds and p-values
(`model.base_detector`); what differs is the input (pixels, conformed to the model's `ImageSpec`)
and the explanations: `top_regions` (grid cells of the input with the largest excess error) instead
of `top_features`, and heatmaps rendered over the input.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from model.artifact import Manifest
from model.base_detector import BaseDetector, ScoreBatch
from model.image_render import heatmap_overlay, image_grid
from model.image_vae import ImageDecoderOutput, ImageVAE, ImageVAEConfig
from model.images import (
    DEFAULT_MAX_PIXELS,
    ImageBatch,
    ImageInputs,
    images_from_array,
    images_from_payload,
    png_base64,
    resize,
    to_channels,
)
from model.scoring import ScoreTerms, ScoringConfig, score_in_chunks

REGION_GRID = 7
"""Regions are cells of a grid with about this many cells along the image's short side, each at least
2×2 pixels: 4×4-pixel cells on 28×28, 2×2 on 8×8, 9×9 on 64×64."""


def score_images(vae: ImageVAE, pixels: np.ndarray, noise: torch.Tensor, scoring: ScoringConfig) -> ScoreTerms:
    """Score (B, C, H, W) images in chunks of `scoring.chunk_size`: the same `score_batch` as tables."""
    return score_in_chunks(vae, None, ImageBatch.from_numpy(pixels), noise, scoring)


def region_cells(height: int, width: int) -> list[tuple[int, int, int, int]]:
    """(top, left, bottom, right) of every grid cell, covering the image exactly."""
    cell = min(max(2, round(min(height, width) / REGION_GRID)), height, width)
    return [
        (top, left, min(top + cell, height), min(left + cell, width))
        for top in range(0, height, cell)
        for left in range(0, width, cell)
    ]


class ImageDetector(BaseDetector):
    """A trained image VAE with its geometry, pixel baseline, scoring configuration and thresholds."""

    kind = "image"
    vae: ImageVAE

    def __init__(self, manifest: Manifest, vae: ImageVAE, device: torch.device):
        super().__init__(manifest, vae, device)
        assert manifest.image is not None and manifest.pixel_baseline is not None
        self.spec = manifest.image
        self.baseline = np.asarray(manifest.pixel_baseline.mean, dtype=np.float64)
        self.error_scale = manifest.pixel_baseline.scale
        self.cells = region_cells(self.spec.height, self.spec.width)
        cell_index = np.zeros((self.spec.height, self.spec.width), dtype=np.int64)
        for k, (top, left, bottom, right) in enumerate(self.cells):
            cell_index[top:bottom, left:right] = k
        self._cell_index = cell_index.ravel()  # each pixel's cell, row-major

    @staticmethod
    def build_network(manifest: Manifest) -> ImageVAE:
        assert isinstance(manifest.network, ImageVAEConfig)
        return ImageVAE(manifest.network)

    # -- inputs ---------------------------------------------------------------------------------

    def inputs_from_payload(
        self, images: Sequence[object] | None, arrays: Sequence[object] | None, max_pixels: int = DEFAULT_MAX_PIXELS
    ) -> ImageInputs:
        return images_from_payload(self.spec, images, arrays, max_pixels)

    def inputs_from_array(self, pixels: np.ndarray) -> ImageInputs:
        return images_from_array(self.spec, pixels)

    # -- scoring --------------------------------------------------------------------------------

    def terms(self, inputs: ImageInputs) -> ScoreTerms:
        return score_images(self.vae, inputs.pixels, self.noise, self.manifest.scoring)

    def missing(self, inputs: ImageInputs) -> np.ndarray:
        return np.zeros((len(inputs), 0), dtype=bool)

    def excess_error(self, terms: ScoreTerms) -> np.ndarray:
        """(B, H, W): each pixel's -log p(x | z = mu) minus its mean over normal (calibration) images."""
        excess = terms.contributions - self.baseline
        return excess.reshape(-1, self.spec.height, self.spec.width)

    def results(self, scored: ScoreBatch, explain: int) -> list[dict[str, object]]:
        """`/score` results with `top_regions`: the `explain` grid cells of largest summed excess
        error, in the input's own pixel coordinates (cells map back through any resize)."""
        inputs: ImageInputs = scored.inputs
        excess = self.excess_error(scored.terms)
        n_cells = len(self.cells)
        # One bincount for the batch: image i's cell k is bin i * n_cells + k.
        bins = (np.arange(len(scored))[:, None] * n_cells + self._cell_index[None, :]).ravel()
        per_cell = np.bincount(bins, weights=excess.ravel(), minlength=len(scored) * n_cells).reshape(-1, n_cells)
        ranked = np.argsort(-per_cell, axis=1, kind="stable")[:, :explain]
        results = []
        for i in range(len(scored)):
            _, height, width = inputs.shapes[i]
            sy, sx = height / self.spec.height, width / self.spec.width
            regions = []
            for k in ranked[i].tolist():
                top, left, bottom, right = self.cells[k]
                x, y = round(left * sx), round(top * sy)
                regions.append(
                    {
                        "x": x,
                        "y": y,
                        "width": max(1, round(right * sx) - x),
                        "height": max(1, round(bottom * sy) - y),
                        "contribution": float(per_cell[i, k]),
                    }
                )
            results.append({**self.result_fields(scored, i), "top_regions": regions})
        return results

    # -- reconstruction, sampling, latent space -------------------------------------------------

    def reconstruct(self, inputs: ImageInputs) -> list[dict[str, object]]:
        """Reconstructions at the posterior mean and error heatmaps, at each input's size and
        channels. One noise draw: neither output depends on the sampled part of the ELBO."""
        terms = score_images(self.vae, inputs.pixels, self.noise[:1], self.manifest.scoring)
        assert isinstance(terms.expected, ImageDecoderOutput)
        means = terms.expected.mean().double().numpy()
        excess = np.clip(self.excess_error(terms), 0.0, None)
        results = []
        for i, shape in enumerate(inputs.shapes):
            heat = heatmap_overlay(inputs.pixels[i], excess[i], self.error_scale)
            results.append(
                {
                    "reconstruction": png_base64(_to_shape(means[i], shape)),
                    "heatmap": png_base64(_to_shape(heat, (3, *shape[1:]))),
                    "reconstruction_error": float(terms.reconstruction_error[i]),
                }
            )
        return results

    @torch.inference_mode()
    def sample_images(self, n: int, seed: int = 0, temperature: float = 1.0) -> np.ndarray:
        """(n, C, H, W) images: z ~ N(0, temperature² I), shown as E[x | z] (pixel noise would only
        add speckle)."""
        generator = torch.Generator().manual_seed(seed)
        z = (torch.randn(n, self.manifest.network.latent_dim, generator=generator) * temperature).to(self.device)
        chunk = self.manifest.scoring.chunk_size  # bounded decoder memory, as when scoring
        parts = [self.vae.decode(z[start : start + chunk]).mean().clamp(0, 1).cpu() for start in range(0, n, chunk)]
        return torch.cat(parts).numpy() if parts else np.zeros((0, *self.spec.shape), dtype=np.float32)

    def warm_up(self) -> np.ndarray:
        images = self.sample_images(4, seed=0)
        return self.score(ImageInputs(images, [image.shape for image in images])).terms.score

    def sample(self, n: int, seed: int = 0, temperature: float = 1.0) -> list[str]:
        """Samples as base64 PNGs."""
        return [png_base64(image) for image in self.sample_images(n, seed, temperature)]

    def sample_grid(self, n: int, seed: int = 0, temperature: float = 1.0) -> str:
        """Samples tiled into one base64 PNG."""
        return png_base64(image_grid(self.sample_images(n, seed, temperature)))


def _to_shape(image: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """A model-geometry image (C, H, W) → the input's (channels, height, width)."""
    channels, height, width = shape
    if image.shape[1:] != (height, width):
        image = resize(image.astype(np.float32), height, width)
    return to_channels(image, channels)
