"""Pictures for people: error heatmaps over the input, and grids of images. Pure numpy on (C, H, W)
floats in [0, 1], so the service renders them without matplotlib."""

from __future__ import annotations

import math

import numpy as np


def hot_colours(t: np.ndarray) -> np.ndarray:
    """(H, W) values in [0, 1] → (3, H, W) RGB on a black → red → yellow → white scale."""
    t = np.clip(t, 0.0, 1.0)
    return np.stack([np.clip(3 * t, 0, 1), np.clip(3 * t - 1, 0, 1), np.clip(3 * t - 2, 0, 1)]).astype(np.float32)


def heatmap_overlay(image: np.ndarray, error: np.ndarray, scale: float) -> np.ndarray:
    """The input in grey with its per-pixel error (H, W) in hot colours on top, RGB (3, H, W).

    `error / scale` is the colour level: with a fixed scale (the calibration images' largest
    typical pixel error) a normal image stays dark and heatmaps compare across images; an error
    above the scale saturates.
    """
    grey = image.mean(axis=0, keepdims=True) if image.shape[0] == 3 else image
    level = np.clip(error / max(scale, 1e-12), 0.0, 1.0)
    alpha = np.clip(1.5 * level, 0.0, 0.85)[None]
    return ((1 - alpha) * 0.6 * np.repeat(grey, 3, axis=0) + alpha * hot_colours(level)).astype(np.float32)


def image_grid(images: np.ndarray, columns: int | None = None, padding: int = 1) -> np.ndarray:
    """(N, C, H, W) → one (C, H', W') image, row by row, with `padding` pixels of grey between."""
    n, channels, height, width = images.shape
    columns = columns or max(1, math.ceil(math.sqrt(n)))
    rows = max(1, math.ceil(n / columns))
    grid = np.full(
        (channels, rows * (height + padding) + padding, columns * (width + padding) + padding), 0.5, dtype=np.float32
    )
    for k in range(n):
        r, c = divmod(k, columns)
        top, left = padding + r * (height + padding), padding + c * (width + padding)
        grid[:, top : top + height, left : left + width] = images[k]
    return grid
