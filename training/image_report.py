"""The picture part of `vae-anomaly evaluate --report` for image models: the most and least
anomalous test images with reconstructions and heatmaps, samples, and the latent space in 2-D."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from model.base_detector import ScoreBatch
from model.image_detector import ImageDetector, score_images
from model.image_render import heatmap_overlay, image_grid
from model.image_vae import ImageDecoderOutput
from model.images import ImageInputs, encode_png, to_channels

EXTREMES = 8
"""Images shown at each end of the score ranking."""


def _rgb(image: np.ndarray) -> np.ndarray:
    return to_channels(image, 3)


def extremes_panel(detector: ImageDetector, inputs: ImageInputs, scored: ScoreBatch, count: int = EXTREMES):
    """Rows of (input, reconstruction, heatmap) triples: the `count` highest scores on the left
    half, the `count` lowest on the right."""
    order = np.argsort(-scored.terms.score, kind="stable")
    chosen = np.concatenate([order[:count], order[::-1][:count]])
    pixels = inputs.pixels[chosen]
    terms = score_images(detector.vae, pixels, detector.noise[:1], detector.manifest.scoring)
    assert isinstance(terms.expected, ImageDecoderOutput)
    means = terms.expected.mean().numpy()
    excess = np.clip(detector.excess_error(terms), 0.0, None)
    tiles = []
    n = len(chosen) // 2
    for row in range(n):
        for k in (row, n + row):  # most anomalous | least anomalous
            tiles += [_rgb(pixels[k]), _rgb(means[k]), heatmap_overlay(pixels[k], excess[k], detector.error_scale)]
    return image_grid(np.stack(tiles), columns=6, padding=2)


def latent_plot(path: Path, latent: np.ndarray, labels: np.ndarray, title: str) -> None:
    """Latent means projected on their first two principal components, coloured by label."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    centred = latent - latent.mean(axis=0)
    _, _, components = np.linalg.svd(centred, full_matrices=False)
    projected = centred @ components[:2].T
    figure, axes = plt.subplots(figsize=(6, 5.5))
    names = [str(v) for v in labels.tolist()]
    for k, name in enumerate(sorted(set(names))):
        mask = np.array([n == name for n in names])
        axes.scatter(projected[mask, 0], projected[mask, 1], s=4, alpha=0.6, label=name, color=plt.cm.tab10(k % 10))
    axes.set_xlabel("PC 1")
    axes.set_ylabel("PC 2")
    axes.set_title(title)
    axes.legend(markerscale=3, fontsize="small", title="label")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def write_image_report(
    directory: Path, detector: ImageDetector, inputs: ImageInputs, scored: ScoreBatch, raw_labels: np.ndarray
) -> list[Path]:
    """extremes.png, samples.png and latent.png, and their section appended to report.md."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    extremes = directory / "extremes.png"
    extremes.write_bytes(encode_png(extremes_panel(detector, inputs, scored)))
    samples = directory / "samples.png"
    samples.write_bytes(encode_png(image_grid(detector.sample_images(64, seed=0), columns=8, padding=2)))
    latent = directory / "latent.png"
    latent_plot(latent, scored.terms.latent_mean, raw_labels, "latent means (PCA), by label")
    report = directory / "report.md"
    section = [
        "",
        "## Images",
        "",
        f"Most anomalous (left three columns: input, reconstruction, heatmap) and least anomalous "
        f"(right three) of the {len(inputs)} test images, {EXTREMES} each:",
        "",
        "![most and least anomalous](extremes.png)",
        "",
        "Samples from the model (z from the prior, shown as E[x | z]):",
        "",
        "![samples](samples.png)",
        "",
        "![latent space](latent.png)",
        "",
    ]
    with report.open("a") as handle:
        handle.write("\n".join(section))
    return [extremes, samples, latent]
