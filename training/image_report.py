"""The picture part of `vae-anomaly evaluate --report` for image models: the most and least
anomalous test images with reconstructions and heatmaps, samples, and the latent space in 2-D
(`training.latent_report`, as for every kind)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from vae_anomaly.model.detector import Detector
from vae_anomaly.model.kinds.image.backbone import ImageDecoderOutput
from vae_anomaly.model.kinds.image.images import ImageInputs, encode_png, to_channels
from vae_anomaly.model.kinds.image.kind import ImageKind
from vae_anomaly.model.kinds.image.render import heatmap_overlay, image_grid
from vae_anomaly.model.scoring import ScoreBatch
from vae_anomaly.training.latent_report import write_latent_section

EXTREMES = 8
"""Images shown at each end of the score ranking."""
PANEL_MIN_WIDTH = 600
"""Pixels: a panel of 8×8 images (62×82 px) is scaled up, nearest-neighbour, to at least this width."""
HEADER_HEIGHT = 30
EXTREMES_COLUMNS = ("input", "reconstr.", "heatmap") * 2


def _rgb(image: np.ndarray) -> np.ndarray:
    return to_channels(image, 3)


def _image_kind(detector: Detector) -> ImageKind:
    assert isinstance(detector.kind, ImageKind), "image reports are for image models"
    return detector.kind


def extremes_panel(detector: Detector, inputs: ImageInputs, scored: ScoreBatch, count: int = EXTREMES):
    """Rows of (input, reconstruction, heatmap) triples: the `count` highest scores on the left
    half, the `count` lowest on the right."""
    kind = _image_kind(detector)
    order = np.argsort(-scored.terms.score, kind="stable")
    chosen = np.concatenate([order[:count], order[::-1][:count]])
    pixels = inputs.pixels[chosen]
    condition = None if inputs.condition is None else inputs.condition[chosen]  # a conditional model's labels
    terms = detector.terms(ImageInputs(pixels, [inputs.shapes[k] for k in chosen], condition), detector.noise[:1])
    expected: ImageDecoderOutput = terms.expected
    means = expected.mean().numpy()
    excess = np.clip(kind.excess_error(terms), 0.0, None)
    tiles = []
    n = len(chosen) // 2
    for row in range(n):
        for k in (row, n + row):  # most anomalous | least anomalous
            tiles += [_rgb(pixels[k]), _rgb(means[k]), heatmap_overlay(pixels[k], excess[k], kind.error_scale)]
    return image_grid(np.stack(tiles), columns=6, padding=2)


def labelled_panel(grid: np.ndarray, columns: Sequence[str], title: str) -> Image.Image:
    """A (C, H, W) grid of equal columns in [0, 1] → an RGB picture scaled up (nearest, whole
    factor) to at least `PANEL_MIN_WIDTH` pixels, under a white header naming each column."""
    rgb = (np.clip(_rgb(grid), 0.0, 1.0) * 255).round().astype(np.uint8).transpose(1, 2, 0)  # (H, W, 3)
    factor = max(1, math.ceil(PANEL_MIN_WIDTH / rgb.shape[1]))
    body = Image.fromarray(rgb).resize((rgb.shape[1] * factor, rgb.shape[0] * factor), Image.Resampling.NEAREST)
    panel = Image.new("RGB", (body.width, body.height + HEADER_HEIGHT), "white")
    panel.paste(body, (0, HEADER_HEIGHT))
    draw = ImageDraw.Draw(panel)
    draw.text((4, 2), title, fill="black")
    width = body.width / len(columns)
    for k, name in enumerate(columns):
        draw.text((k * width + 4, HEADER_HEIGHT - 13), name, fill="black")
    return panel


def write_image_report(
    directory: Path, detector: Detector, inputs: ImageInputs, scored: ScoreBatch, raw_labels: np.ndarray
) -> list[Path]:
    """extremes.png, samples.png (families that can sample) and latent.png, and their sections
    appended to report.md."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    extremes = directory / "extremes.png"
    labelled_panel(extremes_panel(detector, inputs, scored), EXTREMES_COLUMNS, "most anomalous | least anomalous").save(
        extremes
    )
    written = [extremes]
    section = [
        "",
        "## Images",
        "",
        f"Most anomalous (left three columns: input, reconstruction, heatmap) and least anomalous "
        f"(right three) of the {len(inputs)} test images, {EXTREMES} each:",
        "",
        "![most and least anomalous](extremes.png)",
        "",
    ]
    if detector.family.can_sample:
        samples = directory / "samples.png"
        spec = detector.kind.condition_spec()
        given = spec.first_index(64) if spec is not None else None  # a conditional model: its labels in turn
        decoded = detector.decode_prior(64, torch.Generator().manual_seed(0), condition=given)
        samples.write_bytes(encode_png(image_grid(_image_kind(detector).sample_pixels(decoded), columns=8, padding=2)))
        written.append(samples)
        caption = "Samples from the model (z from the prior, shown as E[x | z]"
        caption += ", given each label in turn):" if spec is not None else "):"
        section += [caption, "", "![samples](samples.png)", ""]
    with (directory / "report.md").open("a") as handle:
        handle.write("\n".join(section))
    return written + write_latent_section(directory, detector, inputs, raw_labels)
