"""Calibration scores → thresholds at target false-positive rates, and conformal p-values.

Both rest on one fact: if a new normal record's score is exchangeable with n held-out normal
calibration scores, its rank among them is uniform (Vovk, Gammerman & Shafer, "Algorithmic Learning
in a Random World", 2005; Bates et al., "Testing for outliers with conformal p-values", 2023).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from vae_anomaly.model.defaults import DEFAULT_TARGETS as DEFAULT_TARGETS  # re-exported (torch-free home)

THRESHOLD_NAME = re.compile(r"^[a-z0-9_-]{1,64}$")


class Threshold(BaseModel):
    """A score cut-off; a record exceeds it when score > value. `target_fpr` is None when set by value."""

    model_config = ConfigDict(extra="forbid")

    value: float
    target_fpr: float | None = Field(default=None, gt=0.0, lt=1.0)


def sort_calibration(scores: np.ndarray | list[float]) -> np.ndarray:
    """Calibration scores as a sorted float64 array (the form every function here expects)."""
    return np.sort(np.asarray(scores, dtype=np.float64))


def threshold_for_fpr(calibration: np.ndarray, target_fpr: float) -> float:
    """The smallest calibration order statistic t with P(new normal score > t) <= target_fpr.

    With sorted scores s_(1) <= ... <= s_(n) and k = ceil((n + 1)(1 - a)), a new exchangeable score
    exceeds s_(k) with probability at most (n + 1 - k) / (n + 1) <= a. When k > n (fewer than
    1/a - 1 calibration rows) no order statistic guarantees the target: the maximum is returned and
    `fpr_guaranteed` says so.
    """
    n = calibration.size
    if n == 0:
        raise ValueError("no calibration scores")
    k = math.ceil((n + 1) * (1.0 - target_fpr) - 1e-9)
    return float(calibration[min(max(k, 1), n) - 1])


def fpr_guaranteed(n_calibration: int, target_fpr: float) -> bool:
    """Whether n calibration scores are enough for `threshold_for_fpr` to keep the target."""
    return math.ceil((n_calibration + 1) * (1.0 - target_fpr) - 1e-9) <= n_calibration


def p_values(calibration: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Conformal p-values (1 + #{calibration >= score}) / (n + 1); small = anomalous."""
    n = calibration.size
    at_least = n - np.searchsorted(calibration, scores, side="left")
    return (1.0 + at_least) / (n + 1.0)


@dataclass(frozen=True)
class ThresholdSet:
    """An immutable view of the named thresholds and which one decides `is_anomaly`.

    Changes return a new set, so a reader (a request being scored) never sees a half-made update.
    """

    calibration: np.ndarray
    thresholds: dict[str, Threshold]
    active: str
    _names: tuple[str, ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.active not in self.thresholds:
            raise ValueError(f"active threshold {self.active!r} is not one of {sorted(self.thresholds)}")
        object.__setattr__(self, "_names", tuple(self.thresholds))

    @classmethod
    def from_targets(cls, calibration: np.ndarray, targets: dict[str, float], active: str) -> ThresholdSet:
        thresholds = {
            name: Threshold(value=threshold_for_fpr(calibration, fpr), target_fpr=fpr) for name, fpr in targets.items()
        }
        return cls(calibration, thresholds, active)

    def with_value(self, name: str, value: float) -> ThresholdSet:
        return ThresholdSet(self.calibration, {**self.thresholds, name: Threshold(value=value)}, self.active)

    def with_target(self, name: str, target_fpr: float) -> ThresholdSet:
        threshold = Threshold(value=threshold_for_fpr(self.calibration, target_fpr), target_fpr=target_fpr)
        return ThresholdSet(self.calibration, {**self.thresholds, name: threshold}, self.active)

    def with_active(self, name: str) -> ThresholdSet:
        return ThresholdSet(self.calibration, dict(self.thresholds), name)

    def exceeded(self, scores: np.ndarray) -> np.ndarray:
        """(B, T) bool: score > value for each threshold, in `names` order."""
        values = np.array([self.thresholds[name].value for name in self._names], dtype=np.float64)
        return scores[:, None] > values[None, :]

    @property
    def names(self) -> tuple[str, ...]:
        return self._names
