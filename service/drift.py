"""The sliding window behind the drift gauges: the last N records scored, their scores and p-values.

Counters say how many records crossed a threshold since the process started; they react slowly to
a change in the input distribution. The window answers "what do the most recent records look like":
on undrifted normal traffic the share of conformal p-values below a level sits near that level (it is
what calibration guarantees), so a share far above it means the inputs no longer look like the
calibration data.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np

PVALUE_LEVELS = (0.01, 0.001)
"""The levels of `vae_anomaly_window_pvalue_below{level}`; strings of these are the label values."""


@dataclass(frozen=True)
class WindowSummary:
    """What the gauges publish: how many records the window holds, their mean score, and for each
    level the share of records with a p-value below it (0 when the window is empty)."""

    records: int
    mean_score: float
    share_below: dict[float, float]


class DriftWindow:
    """A ring buffer of the last `size` (score, p-value) pairs.

    `add` is O(batch) whatever the window size: running sums are updated with what enters and what
    leaves, and the score sum is recomputed from the buffer once per lap to shed float round-off.
    Thread-safe: scoring runs on threadpool threads.
    """

    def __init__(self, size: int, levels: tuple[float, ...] = PVALUE_LEVELS):
        if size < 1:
            raise ValueError(f"window size must be at least 1, got {size}")
        self.size = size
        self.levels = levels
        self._scores = np.zeros(size)
        self._below = np.zeros((size, len(levels)), dtype=bool)
        self._next = 0  # where the next record goes
        self._count = 0  # records held, at most size
        self._score_sum = 0.0
        self._below_counts = np.zeros(len(levels), dtype=np.int64)
        self._lock = threading.Lock()

    def add(self, scores: np.ndarray, p_values: np.ndarray) -> WindowSummary:
        """Push a batch (oldest first) and return the summary after it. Shapes: (B,) and (B,)."""
        scores = np.asarray(scores, dtype=np.float64)[-self.size :]
        below = np.asarray(p_values, dtype=np.float64)[-self.size :, None] < np.asarray(self.levels)[None, :]
        with self._lock:
            slots = (self._next + np.arange(len(scores))) % self.size
            held = slots < self._count if self._count < self.size else np.ones(len(slots), dtype=bool)
            self._score_sum -= float(self._scores[slots[held]].sum())
            self._below_counts -= self._below[slots[held]].sum(axis=0)
            self._scores[slots] = scores
            self._below[slots] = below
            self._score_sum += float(scores.sum())
            self._below_counts += below.sum(axis=0)
            self._count = min(self.size, self._count + len(scores))
            lapped = self._next + len(scores) >= self.size
            self._next = (self._next + len(scores)) % self.size
            if lapped:
                self._score_sum = float(self._scores[: self._count].sum())
            return self._summary()

    def summary(self) -> WindowSummary:
        with self._lock:
            return self._summary()

    def _summary(self) -> WindowSummary:
        n = self._count
        shares = {level: (float(c) / n if n else 0.0) for level, c in zip(self.levels, self._below_counts, strict=True)}
        return WindowSummary(records=n, mean_score=self._score_sum / n if n else 0.0, share_below=shares)
