"""Loading a model into a running server: verified first, then swapped in with one assignment.

A reload (`POST /admin/reload`, or SIGHUP to a single-worker server or to one worker) loads the
artifact with `load_detector` (manifest schema, format version, sha256 of the weights), scores a
warm-up batch drawn from the new model and checks the scores are finite, and only then replaces
`ServiceState.current`. Requests that already took their snapshot finish on the old model; anything
wrong leaves the old model serving, counts `vae_anomaly_reloads_total{result="failure"}` and answers
with the `ArtifactError` message.

With several workers each process holds its own model: `POST /admin/reload` reloads the worker that
got the request. SIGHUP to the `serve` process makes uvicorn replace the workers one at a time, each
replacement loading and verifying the artifact in its lifespan (see README, "Hot reload").
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import math
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import orjson
from fastapi import APIRouter, Depends, Request, Response
from fastapi.concurrency import run_in_threadpool

from vae_anomaly.model.detector import Detector, load_detector
from vae_anomaly.model.errors import ArtifactError, ModelError
from vae_anomaly.service.errors import ApiError
from vae_anomaly.service.routes import ADMIN_ERRORS, read_body, require_admin
from vae_anomaly.service.schemas import ErrorResponse, ReloadRequest, ReloadResponse
from vae_anomaly.service.state import LoadedModel, ServiceState
from vae_anomaly.service.threshold_file import apply_on_activation

logger = logging.getLogger(__name__)

router = APIRouter()


def load_verified(model_dir: Path, device: str) -> Detector:
    """Load an artifact and score a warm-up batch drawn from the model itself, so that a model that
    loads but cannot score is refused before it serves, and the first real request does not pay for
    lazy initialisation. Warm-up scores are not counted in metrics. Raises `ArtifactError`."""
    detector = load_detector(model_dir, device)
    try:
        scores = detector.warm_up()
    except Exception as exc:  # e.g. sampling from a distribution the weights make invalid
        raise ArtifactError(
            f"{model_dir}: the warm-up score failed ({type(exc).__name__}: {exc}); the weights are unusable"
        ) from exc
    if not all(math.isfinite(value) for value in scores.tolist()):
        raise ArtifactError(f"{model_dir}: warm-up scores are not finite ({scores.tolist()}); the weights are unusable")
    return detector


def activate(state: ServiceState, detector: Detector, model_dir: Path) -> LoadedModel:
    """Publish the model's metrics and make it the one new requests use (a single assignment).
    Holds the threshold lock so a concurrent threshold update lands on one model or the other."""
    assert state.metrics is not None
    apply_on_activation(detector, state.settings.thresholds_file)  # fleet-wide overrides, if any
    manifest = detector.manifest
    thresholds = {name: t.value for name, t in detector.thresholds.thresholds.items()}
    with state.threshold_lock:
        view = state.metrics.bind_model(
            detector.thresholds.calibration,
            thresholds,
            manifest.model_id,
            manifest.version,
            manifest.kind,
            str(detector.device),
        )
        view.set_active_threshold(detector.thresholds.active)
        state.current = LoadedModel(detector, view, model_dir, time.time())
    return state.current


def refreeze() -> None:
    """Start-up freezes every object it made (`gc.freeze()` in `service.app`), the model included, so
    the collector would never look at a retired model again. After a swap: unfreeze, collect what is
    no longer referenced (the old model, once its last requests are done), freeze what lives."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()


class Reloader:
    """Serialises reloads of one app: a second one while the first runs gets a 409 (or, from a
    signal, a log line), rather than two loads racing to the swap."""

    def __init__(self, state: ServiceState):
        self.state = state
        self.lock = asyncio.Lock()
        self._signal_task: asyncio.Task[Any] | None = None

    async def reload(self, model_dir: Path | None = None) -> dict[str, Any]:
        """Load, verify and swap; returns the reload report. Raises `ApiError` (409, 422, 500)."""
        if self.lock.locked():
            raise ApiError(409, "a reload is already running; retry when it has finished", "reload_in_progress")
        async with self.lock:
            return await self._reload(model_dir)

    async def _reload(self, model_dir: Path | None) -> dict[str, Any]:
        state = self.state
        assert state.current is not None and state.metrics is not None
        previous = state.current
        target = model_dir if model_dir is not None else previous.model_dir
        loc: tuple[str | int, ...] = ("body", "model_dir") if model_dir is not None else ()
        old = previous.detector.manifest
        started = time.perf_counter()
        try:
            detector = await run_in_threadpool(load_verified, target, state.settings.device)
            seconds = time.perf_counter() - started
            current = activate(state, detector, target)  # inside: a failing swap counts as a failure too
        except ModelError as exc:
            state.metrics.record_reload(False)
            logger.error(
                "reload from %s failed; still serving model %s (version %s): %s", target, old.model_id, old.version, exc
            )
            raise ApiError(
                422,
                f"{exc}; still serving model {old.model_id} (version {old.version})",
                "artifact_invalid",
                loc,
            ) from exc
        except Exception as exc:  # anything else from torch or the file system: still not a swap
            state.metrics.record_reload(False)
            logger.exception(
                "reload from %s failed; still serving model %s (version %s)", target, old.model_id, old.version
            )
            raise ApiError(
                500,
                f"reload failed ({type(exc).__name__}: {exc}); "
                f"still serving model {old.model_id} (version {old.version})",
                "reload_failed",
                loc,
            ) from exc
        state.metrics.record_reload(True)
        await run_in_threadpool(refreeze)  # not the compute thread: requests in flight may hold it
        new = current.detector.manifest
        schema_changed = current.detector.kind.input_signature() != previous.detector.kind.input_signature()
        logger.info(
            "reloaded model %s (version %s) from %s in %.2f s, replacing %s (version %s)%s",
            new.model_id,
            new.version,
            target,
            seconds,
            old.model_id,
            old.version,
            "; the feature schema changed" if schema_changed else "",
        )
        return {
            "model": {"id": new.model_id, "version": new.version},
            "previous": {"id": old.model_id, "version": old.version},
            "model_dir": str(target),
            "schema_changed": schema_changed,
            "seconds": round(seconds, 3),
            "pid": os.getpid(),
            "workers": state.settings.workers,
        }

    # -- SIGHUP -----------------------------------------------------------------------------------

    def install_signal_handler(self) -> bool:
        """Reload on SIGHUP. Only the main thread may own signal handlers; an app run elsewhere (a
        test client's portal thread) keeps the default and this returns False."""
        if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "SIGHUP"):
            return False
        asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, self._on_signal)
        return True

    def remove_signal_handler(self) -> None:
        if threading.current_thread() is threading.main_thread() and hasattr(signal, "SIGHUP"):
            asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)

    def _on_signal(self) -> None:
        if self.lock.locked():
            logger.warning("SIGHUP ignored: a reload is already running")
            return
        logger.info("SIGHUP: reloading the model")
        self._signal_task = asyncio.ensure_future(self._reload_quietly())

    async def _reload_quietly(self) -> None:
        with contextlib.suppress(ApiError):  # logged and counted by _reload; the old model keeps serving
            await self.reload()


def get_reloader(request: Request) -> Reloader:
    return request.app.state.reloader


@router.post(
    "/admin/reload",
    response_model=ReloadResponse,
    responses={
        **ADMIN_ERRORS,
        409: {"model": ErrorResponse, "description": "another reload is running"},
        422: {"model": ErrorResponse, "description": "invalid body, or the artifact failed verification"},
        500: {"model": ErrorResponse, "description": "the load failed unexpectedly; the old model still serves"},
    },
    dependencies=[Depends(require_admin)],
    openapi_extra={
        "requestBody": {
            "required": False,
            "content": {"application/json": {"schema": ReloadRequest.model_json_schema()}},
        }
    },
    tags=["operations"],
)
async def reload_model(request: Request, reloader: Reloader = Depends(get_reloader)) -> Response:
    """Load a model (the one being served, re-read, or `model_dir`), verify it, swap it in.
    With several workers, only the worker that answers reloads: send SIGHUP to `serve` instead."""
    body = await read_body(request, ReloadRequest) if await request.body() else ReloadRequest()
    report = await reloader.reload(Path(body.model_dir) if body.model_dir else None)
    return Response(orjson.dumps(report), media_type="application/json")
