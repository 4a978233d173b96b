"""`create_app(settings)`: the FastAPI application. The lifespan loads and warms up the artifact
before traffic; middlewares give each request an id and an access-log line, bound its body size,
and time it for Prometheus."""

from __future__ import annotations

import copy
import gc
import logging
import os
import sys
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any

import torch
from fastapi import FastAPI, Response
from fastapi.responses import PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from vae_anomaly.model import __version__
from vae_anomaly.model.detector import Detector
from vae_anomaly.model.kinds.base import envelope_schema
from vae_anomaly.service.batching import MicroBatcher
from vae_anomaly.service.docs import install_offline_docs
from vae_anomaly.service.errors import install_error_handlers
from vae_anomaly.service.limits import BodySizeLimitMiddleware
from vae_anomaly.service.logs import AccessLogMiddleware
from vae_anomaly.service.metrics import ServiceMetrics
from vae_anomaly.service.multiprocess import register_worker
from vae_anomaly.service.reload import Reloader, activate, load_verified
from vae_anomaly.service.reload import router as reload_router
from vae_anomaly.service.routes import INPUT_BODIES, request_examples, router
from vae_anomaly.service.schemas import InterpolateOptions
from vae_anomaly.service.score_path import ScorePath
from vae_anomaly.service.settings import Settings, get_settings
from vae_anomaly.service.shutdown import ConnectionCloseMiddleware, Drain, unless_stopped
from vae_anomaly.service.state import ServiceState
from vae_anomaly.service.threshold_file import ThresholdWatcher
from vae_anomaly.service.v2 import router as v2_router

logger = logging.getLogger(__name__)


def load_detector(settings: Settings) -> Detector:
    """Load and verify the configured artifact (service/reload.py: checksums, warm-up score)."""
    return load_verified(settings.model_dir, settings.device)


def _endpoint(app: FastAPI, scope: Scope) -> str:
    """The route template (e.g. '/thresholds/{name}'): a small, fixed label set."""
    route = scope.get("route")
    if route is not None:
        return route.path
    return _template(app.router.routes, scope) or "unmatched"


UNCOUNTED_PATHS = frozenset({"/metrics", "/healthz", "/readyz", "/v2/health/live", "/v2/health/ready"})
"""Not in `vae_anomaly_in_flight_requests`: a scrape would always see itself, probes are not load."""


class RequestMetricsMiddleware:
    """Counts and times every HTTP request by route template and status for Prometheus.

    Plain ASGI rather than `@app.middleware("http")`: Starlette's BaseHTTPMiddleware wraps each
    request and response in extra tasks and streams, a measurable cost per request. The in-flight
    gauge is live; finished requests are noted (`ServiceMetrics.count_request`) and published in
    bulk after each micro-batch, and at once when no batch is queued or being scored (an idle
    server, the last request of a burst), so a scrape after the requests sees them all."""

    def __init__(self, app: ASGIApp, fastapi_app: FastAPI, state: ServiceState):
        self.app = app
        self.fastapi_app = fastapi_app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        metrics = self.state.metrics
        counted = metrics is not None and scope["path"] not in UNCOUNTED_PATHS
        if counted:
            assert metrics is not None
            metrics.in_flight.inc()

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            if counted:
                assert metrics is not None
                metrics.in_flight.dec()
            metrics = self.state.metrics
            if metrics is not None:
                metrics.count_request(_endpoint(self.fastapi_app, scope), str(status), time.perf_counter() - started)
                batcher = self.state.batcher
                if batcher is None or batcher.idle:
                    metrics.publish_requests()


def _template(routes: list[BaseRoute], scope: Scope) -> str | None:
    """Match a request that never reached the router (refused by a middleware, e.g. a 413).
    FastAPI >= 0.16x keeps an included router as one entry with no `path`: look inside it (this
    project's routers have no prefix)."""
    for candidate in routes:
        nested = getattr(candidate, "original_router", None)
        if nested is not None:
            found = _template(nested.routes, scope)
            if found is not None:
                return found
            continue
        match, _ = candidate.matches(scope)
        if match == Match.FULL:
            return getattr(candidate, "path", None)
    return None


def _route(routes: list[BaseRoute], path: str, method: str) -> BaseRoute | None:
    """The route of `method path` among `routes`."""
    return next((r for r in routes if getattr(r, "path", None) == path and method in getattr(r, "methods", ())), None)


def _titles(schema: dict[str, Any]) -> list[tuple[str | None, list[str]]]:
    """The titles and fields of a body schema's alternatives: which envelopes it documents."""
    return [(part.get("title"), sorted(part.get("properties", {}))) for part in schema.get("oneOf", [schema])]


def install_model_openapi(app: FastAPI, state: ServiceState) -> None:
    """Publish the loaded model's request schema (a tabular model's features, ...) in the OpenAPI
    document instead of the generic envelopes, whose records are `{}`: clients and schema-driven
    tools learn what to send; and, for every body, an example the model answers with 2xx
    (`request_examples`), which `/docs` shows and sends. Rebuilt when another model is loaded (by
    its id)."""
    generic = _titles(envelope_schema(INPUT_BODIES))  # FastAPI rewrites the schemas a little: compare titles
    steps = InterpolateOptions.model_json_schema()["properties"]
    build = app.openapi
    cache: dict[str, dict[str, Any]] = {}

    def openapi() -> dict[str, Any]:
        detector = state.detector
        key = detector.manifest.model_id if detector is not None else ""
        if key not in cache:
            schema = copy.deepcopy(build())
            if detector is not None:
                specific = detector.kind.request_schema()
                with_steps = [
                    {**part, "properties": {**part.get("properties", {}), **steps}}
                    for part in specific.get("oneOf", [specific])
                ]
                examples = request_examples(detector)
                for path, operations in schema.get("paths", {}).items():
                    for operation in operations.values():
                        content = operation.get("requestBody", {}).get("content", {}).get("application/json", {})
                        if _titles(content.get("schema", {})) == generic:
                            content["schema"] = specific
                        elif path == "/interpolate" and content:
                            content["schema"] = with_steps[0] if len(with_steps) == 1 else {"oneOf": with_steps}
                        if content and path in examples:
                            content["example"] = examples[path]
            cache.clear()
            cache[key] = schema
        return cache[key]

    app.openapi = openapi  # type: ignore[method-assign]


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    state = ServiceState(settings=settings, drain=Drain(settings.drain_seconds))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if settings.torch_threads:
            torch.set_num_threads(settings.torch_threads)
        if settings.switch_interval_seconds is not None:
            sys.setswitchinterval(settings.switch_interval_seconds)
        metrics_dir = settings.prometheus_multiproc_dir
        state.metrics = ServiceMetrics(settings.drift_window, multiprocess_dir=metrics_dir)
        # With several workers, one that starts after the first N replaces another (uvicorn's SIGHUP
        # restart, or a crash): its load counts as a reload, so a broken artifact shows in the metrics.
        replacement = metrics_dir is not None and register_worker(metrics_dir, os.getpid()) > settings.workers
        started = time.perf_counter()
        state.drain.install()  # from here a SIGTERM is ours: before the model is ready, it stops start-up
        try:
            # Off the event loop, in a daemon thread: a SIGTERM during a slow load stops the process.
            loaded = await unless_stopped(lambda: load_detector(settings), state.drain.stopped)
        except Exception:
            if replacement:
                state.metrics.record_reload(False)
            state.metrics.close()
            state.drain.remove()
            raise
        if loaded is None:
            logger.info("SIGTERM during start-up: stopping before the model from %s was loaded", settings.model_dir)
            yield
            state.metrics.close()
            state.drain.remove()
            return
        detector = loaded
        current = activate(state, detector, settings.model_dir)
        state.compute_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vae-anomaly-compute")
        await state.compute(detector.warm_up)  # torch's per-thread set-up, before the first request
        # Everything loaded so far (torch, numpy, the app, the model) lives as long as the process:
        # moved out of the garbage collector's reach, it is no longer rescanned by every full
        # collection. Those scans were the p99 of /score under load: single records at c=16 on the
        # 2-core VM went from p50 16.6 / p99 98.8 ms to p50 10.1 / p99 16.8 ms (docs/BENCHMARKS.md).
        gc.freeze()
        if replacement:
            state.metrics.record_reload(True)
        if settings.micro_batch:
            state.batcher = MicroBatcher(
                settings.micro_batch_max_records,
                settings.micro_batch_max_wait_seconds,
                state.compute_thread,
                on_depth=state.metrics.queued_records.set,
                on_batch=state.metrics.publish_requests,
            )
            state.batcher.start()
        watcher = None
        if settings.thresholds_file is not None:
            watcher = ThresholdWatcher(state, settings.thresholds_file, settings.thresholds_poll_seconds)
            watcher.start()
        state.ready = True
        state.drain.ready = True
        manifest = current.detector.manifest
        logger.info(
            "model %s (version %s) loaded from %s on %s in %.2f s",
            manifest.model_id,
            manifest.version,
            settings.model_dir,
            detector.device,
            time.perf_counter() - started,
        )
        reloader.install_signal_handler()
        yield
        state.ready = False
        if watcher is not None:
            await watcher.close()
        reloader.remove_signal_handler()
        if state.batcher is not None:
            await state.batcher.close()  # scores what is queued, so before the metrics close
        state.compute_thread.shutdown(wait=True)
        state.compute_thread = None
        state.metrics.close()
        state.drain.remove()

    app = FastAPI(
        title="vae-anomaly",
        version=__version__,
        description="Anomaly scores from a variational autoencoder trained on normal data.",
        lifespan=lifespan,
        docs_url=None,  # FastAPI's pages load Swagger UI / ReDoc from a CDN: see service/docs.py
        redoc_url=None,
    )
    install_offline_docs(app)
    app.state.service = state
    app.state.reloader = reloader = Reloader(state)
    install_error_handlers(app)
    app.include_router(router)
    app.include_router(reload_router)
    app.include_router(v2_router)
    if settings.score_fast_path:  # innermost of ours: every middleware below applies to /score too
        app.add_middleware(ScorePath, state=state, route=_route(router.routes, "/score", "POST"))
    app.add_middleware(
        BodySizeLimitMiddleware, limit=settings.max_body_bytes, read_timeout=settings.read_timeout_seconds
    )

    app.add_middleware(RequestMetricsMiddleware, fastapi_app=app, state=state)

    app.add_middleware(ConnectionCloseMiddleware, drain=state.drain)  # draining: every response, even a 413
    app.add_middleware(AccessLogMiddleware, log_payloads=settings.log_payloads)  # outermost: sees every request

    install_model_openapi(app, state)

    @app.get(
        "/metrics",
        tags=["operations"],
        response_class=PlainTextResponse,
        responses={200: {"description": "Prometheus text exposition format", "content": {"text/plain": {}}}},
    )
    async def metrics() -> Response:
        """Prometheus exposition: this process's metrics, or every worker's with `--workers N`."""
        body = state.metrics.exposition() if state.metrics else b""
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    return app
