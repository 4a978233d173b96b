"""Sensor standardisation fitted on the training rows, and windows → model inputs.

Missing readings (NaN) are masked out of the likelihood and enter the encoder as 0 (the training
mean), so a window with a gap is still scored on what was observed.
"""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

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
