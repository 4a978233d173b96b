"""Sensor standardisation fitted on the training rows, and windows → model inputs.

Missing readings (NaN) are masked out of the likelihood and enter the encoder as 0 (the training
mean), so a window with a gap is still scored on what was observed.
"""

from __future__ import annotations

import warnings

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

SLOW_BLOCKS = 4
SLOW_RATIO = 0.5
"""A sensor is *slow* (its level drifts) when, over the training rows cut into `SLOW_BLOCKS`
consecutive blocks, the spread of the block means exceeds `SLOW_RATIO` times the mean spread
within a block. A linear drift gives ~3.9, white noise ~1/sqrt(block rows), a cycle shorter than a
block ~0 (so a pump's 60 s pressure cycle is not mistaken for drift). On SKAB's training rows
Thermocouple exceeds it in 34 files of 34, Temperature in 24, every other sensor in at most 5."""

MIN_STD = 1e-8
"""A sensor constant on the training rows gets unit scale instead of a division by ~0; its decoder
variance floor then decides how much a change of it costs."""


class SensorScaling(BaseModel):
    """Per-sensor mean and standard deviation of the training rows; stored in the manifest."""

    model_config = ConfigDict(extra="forbid")

    sensors: list[str] = Field(min_length=1)
    mean: list[float]
    std: list[float]

    def standardize(self, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """values (..., C) in sensor units → (standardised values with 0 for missing, observed mask)."""
        mask = np.isfinite(values)
        z = (values - np.asarray(self.mean)) / np.asarray(self.std)
        return np.where(mask, z, 0.0), mask

    def to_original(self, z: np.ndarray) -> np.ndarray:
        """Standardised (..., C) → sensor units."""
        return z * np.asarray(self.std) + np.asarray(self.mean)


def fit_scaling(sensors: list[str], values: np.ndarray) -> SensorScaling:
    """Mean and standard deviation per sensor over the rows (N, C), ignoring missing readings."""
    with np.errstate(invalid="ignore"):
        mean = np.nanmean(values, axis=0)
        std = np.nanstd(values, axis=0)
    mean = np.where(np.isfinite(mean), mean, 0.0)
    std = np.where(np.isfinite(std) & (std > MIN_STD), std, 1.0)
    return SensorScaling(sensors=sensors, mean=mean.tolist(), std=std.tolist())


def slow_sensors(sensors: list[str], blocks: np.ndarray) -> list[str]:
    """The sensors whose level drifts between consecutive blocks (n, L, C) of the training rows
    (NaN = missing); see `SLOW_RATIO`.

    Such a sensor carries a level that the training rows cannot pin down (a rig warming up), so a
    model of its absolute value alarms on every later normal row. Fewer than two blocks decide
    nothing: none is slow. The ratio does not depend on the sensors' scale.
    """
    if len(blocks) < 2:
        return []
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        between = np.nanstd(np.nanmean(blocks, axis=1), axis=0)
        within = np.nanmean(np.nanstd(blocks, axis=1), axis=0)
    ratio = between / np.maximum(within, MIN_STD)
    return [s for s, r in zip(sensors, ratio.tolist(), strict=True) if np.isfinite(r) and r > SLOW_RATIO]


def consecutive_blocks(values: np.ndarray, blocks: int = SLOW_BLOCKS) -> np.ndarray:
    """Rows (N, C) of one series cut into `blocks` consecutive equal blocks (blocks, N // blocks, C);
    the last N % blocks rows are left out."""
    length = len(values) // blocks
    return values[: length * blocks].reshape(blocks, length, -1)


def window_levels(z: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Mean of each window's observed standardised values per sensor: z, mask (n, T, C) → (n, C);
    0 for a sensor missing over the whole window."""
    counts = mask.sum(axis=1)
    return np.where(counts > 0, np.where(mask, z, 0.0).sum(axis=1) / np.maximum(counts, 1), 0.0)
