"""What the app holds between requests: the settings, the loaded model and the metrics.

The model and its metrics view sit together in one immutable `LoadedModel`, replaced by a single
assignment on reload: a request that called `loaded()` keeps scoring with, and reporting, the model
it started with, while the next request sees the new one.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from fastapi import Request

from vae_anomaly.model.detector import Detector
from vae_anomaly.model.thresholds import ThresholdSet
from vae_anomaly.service.metrics import ModelMetrics, ServiceMetrics
from vae_anomaly.service.settings import Settings
from vae_anomaly.service.shutdown import Drain

T = TypeVar("T")

if TYPE_CHECKING:
    from vae_anomaly.service.batching import MicroBatcher


@dataclass(frozen=True)
class LoadedModel:
    detector: Detector
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
    compute_thread: ThreadPoolExecutor | None = None  # the lifespan's, from start-up to shutdown
    drain: Drain = field(default_factory=lambda: Drain(0.0))  # SIGTERM handling, service/shutdown.py

    async def compute(self, function: Callable[[], T]) -> T:
        """Run model work (checking, scoring, decoding) on the one compute thread.

        One thread, not the event loop's threadpool of dozens: torch keeps an intra-op (OpenMP) pool
        per calling thread, so scoring from many threads starts many pools that spin against each
        other on a small machine. Measured on the 2-core VM, 4096-record /score requests: p50 187 ms
        and p99 368 ms from the threadpool, against a compute floor of 76 ms (docs/BENCHMARKS.md)."""
        assert self.compute_thread is not None, "lifespan has not started the compute thread"
        return await asyncio.get_running_loop().run_in_executor(self.compute_thread, function)

    @property
    def detector(self) -> Detector | None:
        return self.current.detector if self.current is not None else None

    def loaded(self) -> tuple[Detector, ModelMetrics]:
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
        metrics.set_active_threshold(thresholds.active)


async def get_state(request: Request) -> ServiceState:
    """Async on purpose: FastAPI runs a plain `def` dependency in its threadpool, a thread hop per request."""
    return request.app.state.service
