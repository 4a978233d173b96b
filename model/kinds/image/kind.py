"""The image kind: grey or RGB images conformed to one geometry (`ImageSpec`).

Codec: base64 PNG/JPEG or nested arrays → checked pixels (`images`) → `ImageBatch`; backbone:
convolutions (`backbone`); likelihood: per pixel (`likelihood`). Results carry `top_regions` (grid
cells of the input with the largest excess error over normal images) and reconstructions and
heatmaps as PNGs at each input's own size (`render`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from vae_anomaly.model.conditions import ConditionSpec
from vae_anomaly.model.errors import InputError, InputIssue
from vae_anomaly.model.kinds.base import Corruption, InputLimits, envelope_schema
from vae_anomaly.model.kinds.image.backbone import (
    ImageDecoder,
    ImageDecoderOutput,
    ImageEncoder,
    ImageNetworkConfig,
    PixelLikelihood,
    default_latent_dim,
)
from vae_anomaly.model.kinds.image.images import (
    ImageBatch,
    ImageInputs,
    ImageSpec,
    PixelBaseline,
    images_from_array,
    images_from_payload,
    png_base64,
    resize,
    to_channels,
)
from vae_anomaly.model.kinds.image.likelihood import pixel_log_probs
from vae_anomaly.model.kinds.image.render import heatmap_overlay, image_grid
from vae_anomaly.model.kinds.image.requests import ImageScoreRequest
from vae_anomaly.model.scoring import ScoreBatch, ScoreTerms, result_fields

REGION_GRID = 7
"""Regions are cells of a grid with about this many cells along the image's short side, each at least
2×2 pixels: 4×4-pixel cells on 28×28, 2×2 on 8×8, 9×9 on 64×64."""


class ImageKindConfig(BaseModel):
    """The image manifest section: the geometry inputs are conformed to, the per-pixel error of
    normal images (from calibration), the backbone."""

    model_config = ConfigDict(extra="forbid")

    image: ImageSpec
    pixel_baseline: PixelBaseline
    network: ImageNetworkConfig
    condition: ConditionSpec | None = Field(
        default=None, description="conditional models (cvae): the labels, one variable named 'label'"
    )


class ImageOptions(BaseModel):
    """Training options of image models (the pixel likelihood)."""

    model_config = ConfigDict(extra="forbid")

    likelihood: PixelLikelihood = Field(default="gaussian", description="pixel likelihood of image models")
    pixel_logvar_min: float = Field(default=-3.2, le=0.0, description="floor of image pixels' log-variance")


def region_cells(height: int, width: int) -> list[tuple[int, int, int, int]]:
    """(top, left, bottom, right) of every grid cell, covering the image exactly."""
    cell = min(max(2, round(min(height, width) / REGION_GRID)), height, width)
    return [
        (top, left, min(top + cell, height), min(left + cell, width))
        for top in range(0, height, cell)
        for left in range(0, width, cell)
    ]


def pixel_baseline(contributions: np.ndarray) -> PixelBaseline:
    """Mean per-pixel error of calibration images, and the 99.9th percentile of their positive
    excess over it as the heatmap's full scale."""
    mean = contributions.mean(axis=0)
    excess = np.clip(contributions - mean, 0.0, None)
    scale = float(np.quantile(excess, 0.999)) if excess.size else 1.0
    return PixelBaseline(mean=mean.tolist(), scale=max(scale, 1e-3))


class ImageKind:
    """Images of one geometry; see the module docstring. Built from a manifest section, or by
    `ImageKind.untrained` before calibration has measured the pixel baseline."""

    name: ClassVar[str] = "image"
    config_model: ClassVar[type[BaseModel]] = ImageKindConfig
    options_model: ClassVar[type[BaseModel]] = ImageOptions
    request_models: ClassVar[tuple[type[BaseModel], ...]] = (ImageScoreRequest,)
    input_fields: ClassVar[tuple[str, ...]] = ("images", "arrays")
    batch_fields: ClassVar[tuple[str, ...]] = ("images", "arrays")
    expected_input: ClassVar[str] = "an image model: send 'images' or 'arrays'"
    explanation_field: ClassVar[str] = "top_regions"
    micro_batch: ClassVar[bool] = False  # decoding images is CPU work: done on the compute thread
    result_unit: ClassVar[str] = "image"

    def __init__(self, config: ImageKindConfig):
        self._setup(config.image, config.network, config.pixel_baseline, config.condition)

    @classmethod
    def untrained(
        cls, spec: ImageSpec, network: ImageNetworkConfig, condition: ConditionSpec | None = None
    ) -> ImageKind:
        kind = cls.__new__(cls)
        kind._setup(spec, network, None, condition)
        return kind

    def _setup(
        self,
        spec: ImageSpec,
        network: ImageNetworkConfig,
        baseline: PixelBaseline | None,
        condition: ConditionSpec | None = None,
    ) -> None:
        self.spec = spec
        self.condition = condition
        self.network = network
        self.pixel_baseline = baseline
        self.baseline = np.asarray(baseline.mean if baseline else np.zeros(spec.height * spec.width), dtype=np.float64)
        self.error_scale = baseline.scale if baseline else 1.0
        self.cells = region_cells(spec.height, spec.width)
        cell_index = np.zeros((spec.height, spec.width), dtype=np.int64)
        for k, (top, left, bottom, right) in enumerate(self.cells):
            cell_index[top:bottom, left:right] = k
        self._cell_index = cell_index.ravel()  # each pixel's cell, row-major

    def default_latent_dim(self) -> int:
        return default_latent_dim(self.spec.channels, self.spec.height, self.spec.width)

    def condition_spec(self) -> ConditionSpec | None:
        return self.condition

    # -- backbone and likelihood -------------------------------------------------------------------

    def build_encoder(self) -> nn.Module:
        return ImageEncoder(self.network)

    def feature_dim(self) -> int:
        height, width = self.network.bottleneck
        return self.network.widths[-1] * height * width

    def build_decoder(self, latent_dim: int) -> nn.Module:
        return ImageDecoder(self.network, latent_dim)

    def log_likelihood(self, decoded: ImageDecoderOutput, batch: ImageBatch) -> torch.Tensor:
        return pixel_log_probs(decoded, batch)

    def corrupt(self, batch: ImageBatch, corruption: Corruption, generator: torch.Generator) -> ImageBatch:
        """Masking sets a share of pixels (all channels) to 0; Gaussian noise is added to every pixel."""
        x = batch.x
        if corruption.kind == "masking":
            n, _, height, width = x.shape
            keep = torch.rand((n, 1, height, width), generator=generator) >= corruption.rate
            return ImageBatch(x * keep.to(x.device).float(), batch.condition)
        return ImageBatch(x + torch.randn(x.shape, generator=generator).to(x.device) * corruption.rate, batch.condition)

    # -- codec ---------------------------------------------------------------------------------------

    def batch(self, inputs: ImageInputs) -> ImageBatch:
        batch = ImageBatch.from_numpy(inputs.pixels)
        if self.condition is not None:
            assert inputs.condition is not None, "a conditional model's inputs carry their labels"
            batch.condition = self.condition.one_hot(inputs.condition)
        return batch

    def count(self, inputs: ImageInputs) -> int:
        return len(inputs)

    def concat(self, parts: Sequence[ImageInputs]) -> ImageInputs:
        conditions = [p.condition for p in parts if p.condition is not None]
        condition = np.concatenate(conditions) if len(conditions) == len(parts) else None
        return ImageInputs(np.concatenate([p.pixels for p in parts]), [s for p in parts for s in p.shapes], condition)

    def missing(self, inputs: ImageInputs) -> np.ndarray:
        return np.zeros((len(inputs), 0), dtype=bool)

    def parse_request(self, data: dict[str, Any]) -> ImageScoreRequest:
        return ImageScoreRequest.model_validate(data)

    def request_inputs(self, body: ImageScoreRequest, limits: InputLimits) -> ImageInputs:
        inputs = images_from_payload(
            self.spec, body.images, body.arrays, limits.max_image_pixels, limits.max_request_pixels
        )
        return self.with_labels(inputs, body.labels, "labels")

    def inputs_from_array(self, pixels: np.ndarray, labels: np.ndarray | None = None) -> ImageInputs:
        """Images read from a file, (N, H, W) or (N, C, H, W) → checked inputs; a conditional
        model needs their `labels` (N,)."""
        inputs = images_from_array(self.spec, pixels)
        return self.with_labels(inputs, None if labels is None else labels.tolist(), "labels")

    def with_labels(self, inputs: ImageInputs, labels: list[object] | None, field: str) -> ImageInputs:
        """A conditional model's inputs with each image's label checked against the known ones;
        `InputError` when labels are absent, of another count, unknown, or sent to a model without
        a condition."""
        if self.condition is None:
            if labels is not None:
                msg = "this image model is not conditional: send no labels"
                raise InputError([InputIssue((field,), msg, "extra_forbidden")])
            return inputs
        known = self.condition.variables[0].known()
        if labels is None:
            msg = f"this conditional image model needs each image's label (one of {known})"
            raise InputError([InputIssue((field,), msg, "missing")])
        if len(labels) != len(inputs):
            msg = f"expected one label per image ({len(inputs)}), got {len(labels)}"
            raise InputError([InputIssue((field,), msg, "labels_length")])
        positions, issues = self.condition.column_index("label", labels, (field,), name_in_loc=False)
        if issues:
            raise InputError(issues)
        return ImageInputs(inputs.pixels, inputs.shapes, positions[:, None])

    def input_signature(self) -> object:
        return self.spec

    def request_schema(self) -> dict[str, Any]:
        """The envelopes as they are: an image's geometry is checked after decoding."""
        return envelope_schema(self.request_models)

    def example_body(self, n: int) -> dict[str, Any]:
        """`n` black images of the model's size as `arrays` (H×W, or C×H×W in colour), with the
        condition's first label for a conditional model."""
        spec = self.spec
        row = [0] * spec.width
        image: list[Any] = [list(row) for _ in range(spec.height)]
        if spec.channels > 1:
            image = [[list(r) for r in image] for _ in range(spec.channels)]
        body: dict[str, Any] = {"arrays": [image for _ in range(n)]}
        if self.condition is not None:
            label = next(iter(self.condition.example().values()))
            body["labels"] = [label] * n
        return body

    def describe(self) -> dict[str, object]:
        described: dict[str, object] = {
            "image": self.spec.model_dump(mode="json"),
            "network": self.network.model_dump(mode="json"),
        }
        if self.condition is not None:
            described["condition"] = self.condition.model_dump(mode="json")
        return described

    # -- rendering -----------------------------------------------------------------------------------

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
        results = result_fields(scored)
        for i, result in enumerate(results):
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
            result["top_regions"] = regions
        return results

    def reconstruct(self, inputs: ImageInputs, terms: ScoreTerms) -> list[dict[str, object]]:
        """Reconstructions at the code and error heatmaps, at each input's size (at most
        `MAX_RENDER_PIXELS`, aspect kept) and channels."""
        expected: ImageDecoderOutput = terms.expected
        means = expected.mean().double().numpy()
        excess = np.clip(self.excess_error(terms), 0.0, None)
        results = []
        for i, input_shape in enumerate(inputs.shapes):
            shape = render_shape(input_shape)
            heat = heatmap_overlay(inputs.pixels[i], excess[i], self.error_scale)
            results.append(
                {
                    "reconstruction": png_base64(_to_shape(means[i], shape)),
                    "heatmap": png_base64(_to_shape(heat, (3, *shape[1:]))),
                    "reconstruction_error": float(terms.reconstruction_error[i]),
                }
            )
        return results

    def sample_pixels(self, decoded: ImageDecoderOutput) -> np.ndarray:
        """(n, C, H, W) images shown as E[x | z] (pixel noise would only add speckle)."""
        return decoded.mean().clamp(0, 1).cpu().numpy()

    def render_samples(
        self, decoded: ImageDecoderOutput, generator: torch.Generator, condition: np.ndarray | None = None
    ) -> list[str]:
        """Samples as base64 PNGs (their label is the request's condition)."""
        return [png_base64(image) for image in self.sample_pixels(decoded)]

    def render_expected(self, decoded: ImageDecoderOutput, condition: np.ndarray | None = None) -> list[str]:
        """E[x | z] at each code as base64 PNGs at the model's geometry (a label condition has no
        place in a PNG: the request's labels are the ends')."""
        return [png_base64(image) for image in self.sample_pixels(decoded)]

    def input_keys(self, inputs: ImageInputs) -> list[dict[str, object]]:
        return [{} for _ in range(len(inputs))]

    def render_grid(self, decoded: ImageDecoderOutput) -> str:
        """Samples tiled into one base64 PNG."""
        return png_base64(image_grid(self.sample_pixels(decoded)))

    def inputs_from_decoded(
        self, decoded: ImageDecoderOutput, generator: torch.Generator, condition: np.ndarray | None = None
    ) -> ImageInputs:
        images = self.sample_pixels(decoded)
        return ImageInputs(images, [image.shape for image in images], condition)

    def calibrated_config(self, terms: ScoreTerms) -> BaseModel:
        return ImageKindConfig(
            image=self.spec,
            pixel_baseline=pixel_baseline(terms.contributions),
            network=self.network,
            condition=self.condition,
        )


MAX_RENDER_PIXELS = 512 * 512
"""Largest width × height of a reconstruction or heatmap. Upscaling a model-sized picture to a
2048×2048 input adds no information, only seconds of resizing and megabytes of PNG per image."""


def render_shape(shape: tuple[int, int, int]) -> tuple[int, int, int]:
    """An input's (C, H, W) scaled down, aspect kept, to at most `MAX_RENDER_PIXELS` pixels."""
    channels, height, width = shape
    if height * width <= MAX_RENDER_PIXELS:
        return shape
    factor = (MAX_RENDER_PIXELS / (height * width)) ** 0.5
    return channels, max(1, int(height * factor)), max(1, int(width * factor))


def _to_shape(image: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """A model-geometry image (C, H, W) → the input's (channels, height, width)."""
    channels, height, width = shape
    if image.shape[1:] != (height, width):
        image = resize(image.astype(np.float32), height, width)
    return to_channels(image, channels)
