"""What the app holds between requests: the settings, the loaded model and the metrics.

The model and its metrics view sit together in one immutable `LoadedModel`, replaced by a single
assignment on reload: a request that called `loaded()` keeps scoring with, and reporting, the model
it started with, while the next request sees the new one.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from fastapi import Request

from model.base_detector import BaseDetector
from model.thresholds import ThresholdSet
from service.metrics import ModelMetrics, ServiceMetrics
from service.settings import Settings

if TYPE_CHECKING:
    from service.batching import MicroBatcher


@dataclass(frozen=True)
class LoadedModel:
    detector: BaseDetector
    metrics: ModelMetrics
    model_dir: Path
    loaded_at: float  # unix time


@dataclass
class ServiceState:
    settings: Settings
    metrics: ServiceMetrics | None = None
    current: LoadedModel | None = None
    ready: bool = False
    batcher: MicroBatcher | None = None  # None when micro-batching is off
    threshold_lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def detector(self) -> BaseDetector | None:
        return self.current.detector if self.current is not None else None

    def loaded(self) -> tuple[BaseDetector, ModelMetrics]:
        """One consistent snapshot of the model and its metrics; call once per request."""
        current = self.current
        assert current is not None, "lifespan has not loaded the model"
        return current.detector, current.metrics

    def replace_thresholds(self, thresholds: ThresholdSet) -> None:
        """Swap in a new threshold set (one assignment: readers see the old set or the new one).
        Callers hold `threshold_lock`, which a reload also takes while it swaps the model."""
        detector, metrics = self.loaded()
        detector.thresholds = thresholds
        metrics.set_thresholds({name: t.value for name, t in thresholds.thresholds.items()})


def get_state(request: Request) -> ServiceState:
    return request.app.state.service
