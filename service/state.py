"""What the app holds between requests: the settings, the loaded detector and its metrics."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from fastapi import Request

from model.detector import Detector
from model.thresholds import ThresholdSet
from service.metrics import ServiceMetrics
from service.settings import Settings

if TYPE_CHECKING:
    from service.batching import MicroBatcher


@dataclass
class ServiceState:
    settings: Settings
    detector: Detector | None = None
    metrics: ServiceMetrics | None = None
    ready: bool = False
    batcher: MicroBatcher | None = None  # None when micro-batching is off
    threshold_lock: threading.Lock = field(default_factory=threading.Lock)

    def loaded(self) -> tuple[Detector, ServiceMetrics]:
        assert self.detector is not None and self.metrics is not None, "lifespan has not loaded the model"
        return self.detector, self.metrics

    def replace_thresholds(self, thresholds: ThresholdSet) -> None:
        """Swap in a new threshold set (one assignment: readers see the old set or the new one)."""
        detector, metrics = self.loaded()
        detector.thresholds = thresholds
        metrics.set_thresholds({name: t.value for name, t in thresholds.thresholds.items()})


def get_state(request: Request) -> ServiceState:
    return request.app.state.service
