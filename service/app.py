"""`create_app(settings)`: the FastAPI application. The lifespan loads and warms up the artifact
before traffic; a middleware times every request for Prometheus."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import torch
from fastapi import FastAPI, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.routing import Match

from model import __version__
from model.detector import Detector
from service.batching import MicroBatcher
from service.errors import install_error_handlers
from service.metrics import ServiceMetrics
from service.routes import router
from service.settings import Settings, get_settings
from service.state import ServiceState

logger = logging.getLogger(__name__)


def load_detector(settings: Settings) -> Detector:
    """Load the artifact and score one record drawn from the model itself, so the first real
    request does not pay for lazy initialisation. Warm-up scores are not counted in metrics."""
    detector = Detector.load(settings.model_dir, settings.device)
    warmup = detector.columns_from_records(detector.sample(4, seed=0))
    detector.score(warmup)
    return detector


def _endpoint(request: Request) -> str:
    """The route template (e.g. '/thresholds/{name}'): a small, fixed label set."""
    route = request.scope.get("route")
    if route is not None:
        return route.path
    for candidate in request.app.router.routes:
        match, _ = candidate.matches(request.scope)
        if match == Match.FULL:
            return candidate.path
    return "unmatched"


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    state = ServiceState(settings=settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if settings.torch_threads:
            torch.set_num_threads(settings.torch_threads)
        started = time.perf_counter()
        detector = load_detector(settings)
        thresholds = {name: t.value for name, t in detector.thresholds.thresholds.items()}
        metrics = ServiceMetrics(detector.thresholds.calibration, thresholds)
        manifest = detector.manifest
        metrics.set_model(manifest.model_id, manifest.version, manifest.kind, str(detector.device))
        if settings.micro_batch:
            batcher = MicroBatcher(
                detector, metrics, settings.micro_batch_max_records, settings.micro_batch_max_wait_seconds
            )
            batcher.start()
            state.batcher = batcher
        state.detector, state.metrics, state.ready = detector, metrics, True
        logger.info(
            "model %s (version %s) loaded from %s on %s in %.2f s",
            manifest.model_id,
            manifest.version,
            settings.model_dir,
            detector.device,
            time.perf_counter() - started,
        )
        yield
        state.ready = False
        if state.batcher is not None:
            await state.batcher.close()

    app = FastAPI(
        title="vae-anomaly",
        version=__version__,
        description="Anomaly scores from a variational autoencoder trained on normal data.",
        lifespan=lifespan,
    )
    app.state.service = state
    install_error_handlers(app)
    app.include_router(router)

    @app.middleware("http")
    async def record_metrics(request: Request, call_next):
        started = time.perf_counter()
        status = 500
        try:
            response = await call_next(request)
            status = response.status_code
            return response
        finally:
            if state.metrics is not None:
                endpoint = _endpoint(request)
                state.metrics.requests.labels(endpoint=endpoint, status=str(status)).inc()
                state.metrics.duration.labels(endpoint=endpoint).observe(time.perf_counter() - started)

    @app.get("/metrics", tags=["operations"], include_in_schema=True)
    async def metrics() -> Response:
        """Prometheus exposition of this process's metrics."""
        registry = state.metrics.registry if state.metrics else None
        body = generate_latest(registry) if registry else b""
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    return app
