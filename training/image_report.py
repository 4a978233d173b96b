"""The picture part of `vae-anomaly evaluate --report` for image models: the most and least
anomalous test images with reconstructions and heatmaps, samples, and the latent space in 2-D
(`training.latent_report`, as for every kind)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from model.detector import Detector
from model.kinds.image.backbone import ImageDecoderOutput
from model.kinds.image.images import ImageInputs, encode_png, to_channels
from model.kinds.image.kind import ImageKind
from model.kinds.image.render import heatmap_overlay, image_grid
from model.scoring import ScoreBatch
from training.latent_report import write_latent_section

EXTREMES = 8
"""Images shown at each end of the score ranking."""


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
    terms = detector.terms(ImageInputs(pixels, [inputs.shapes[k] for k in chosen]), detector.noise[:1])
    expected: ImageDecoderOutput = terms.expected
    means = expected.mean().numpy()
    excess = np.clip(kind.excess_error(terms), 0.0, None)
    tiles = []
    n = len(chosen) // 2
    for row in range(n):
        for k in (row, n + row):  # most anomalous | least anomalous
            tiles += [_rgb(pixels[k]), _rgb(means[k]), heatmap_overlay(pixels[k], excess[k], kind.error_scale)]
    return image_grid(np.stack(tiles), columns=6, padding=2)


def write_image_report(
    directory: Path, detector: Detector, inputs: ImageInputs, scored: ScoreBatch, raw_labels: np.ndarray
) -> list[Path]:
    """extremes.png, samples.png (families that can sample) and latent.png, and their sections
    appended to report.md."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    extremes = directory / "extremes.png"
    extremes.write_bytes(encode_png(extremes_panel(detector, inputs, scored)))
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
        decoded = detector.decode_prior(64, torch.Generator().manual_seed(0))
        samples.write_bytes(encode_png(image_grid(_image_kind(detector).sample_pixels(decoded), columns=8, padding=2)))
        written.append(samples)
        section += ["Samples from the model (z from the prior, shown as E[x | z]):", "", "![samples](samples.png)", ""]
    with (directory / "report.md").open("a") as handle:
        handle.write("\n".join(section))
    return written + write_latent_section(directory, detector, inputs, raw_labels)
