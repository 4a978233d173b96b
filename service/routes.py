"""Thin handlers: check the envelope, call the detector, build the response."""

from __future__ import annotations

import secrets
from typing import Any, TypeVar

import orjson
from fastapi import APIRouter, Depends, Request, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ValidationError

from model.thresholds import THRESHOLD_NAME, ThresholdSet
from service.batching import ScoreBody, body_columns, score_body
from service.errors import ApiError
from service.schemas import (
    ActiveThresholdUpdate,
    ColumnarScoreRequest,
    ErrorResponse,
    ReconstructResponse,
    SampleRequest,
    SampleResponse,
    ScoreRequest,
    ScoreResponse,
    ThresholdsResponse,
    ThresholdUpdate,
)
from service.state import ServiceState, get_state

router = APIRouter()
Body = TypeVar("Body", bound=BaseModel)

ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse, "description": "malformed JSON"},
    413: {"model": ErrorResponse, "description": "too many records"},
    422: {"model": ErrorResponse, "description": "a record or field does not fit the model's schema"},
}
ADMIN_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorResponse, "description": "no bearer token"},
    403: {"model": ErrorResponse, "description": "wrong token, or admin endpoints disabled"},
    422: {"model": ErrorResponse, "description": "invalid body"},
}


def _openapi_body(*models: type[BaseModel]) -> dict[str, Any]:
    """Document a body that the handler parses itself (orjson: strict JSON, no NaN/Infinity)."""
    schemas = [model.model_json_schema() for model in models]
    schema = schemas[0] if len(schemas) == 1 else {"anyOf": schemas}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


async def _read_json(request: Request) -> dict[str, Any]:
    """Parse the body as strict JSON (orjson refuses NaN and Infinity, which Python's json accepts)."""
    try:
        data = orjson.loads(await request.body())
    except orjson.JSONDecodeError as exc:
        raise ApiError(
            400, f"malformed JSON (NaN and Infinity are not JSON): {exc}", "json_invalid", ("body",)
        ) from exc
    if not isinstance(data, dict):
        raise ApiError(422, "expected a JSON object", "model_type", ("body",))
    return data


async def read_body(request: Request, model: type[Body], max_records: int | None = None) -> Body:
    """Parse strict JSON, refuse more than `max_records` records with a 413 before validating them,
    then validate."""
    data = await _read_json(request)
    if max_records is not None:
        _check_batch(data, max_records)
    return _validate(model, data)


async def read_score_body(request: Request, max_records: int) -> ScoreBody:
    """A `/score` or `/reconstruct` body: `{"records": [...]}`, or columnar when it has "columns"."""
    data = await _read_json(request)
    _check_batch(data, max_records)
    if "columns" in data:
        return _validate(ColumnarScoreRequest, data)
    return _validate(ScoreRequest, data)


def _validate(model: type[Body], data: dict[str, Any]) -> Body:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        loc = ("body", *first["loc"])
        raise ApiError(422, first["msg"], first["type"], loc) from exc


def _check_batch(data: dict[str, Any], limit: int) -> None:
    for key in ("records", "data"):
        records = data.get(key)
        if isinstance(records, list) and len(records) > limit:
            raise ApiError(
                413,
                f"{len(records)} records exceed the limit of {limit} per request (VAE_ANOMALY_MAX_BATCH); "
                "split the batch",
                "too_many_records",
                ("body", key),
            )


def _model_ref(state: ServiceState) -> dict[str, str]:
    detector, _ = state.loaded()
    return {"id": detector.manifest.model_id, "version": detector.manifest.version}


def _json(payload: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(payload), status_code=status, media_type="application/json")


@router.post(
    "/score",
    response_model=ScoreResponse,
    responses=ERRORS,
    openapi_extra=_openapi_body(ScoreRequest, ColumnarScoreRequest),
    tags=["scoring"],
)
async def score(request: Request, state: ServiceState = Depends(get_state)) -> Response:
    """Score records: higher = more anomalous; `is_anomaly` follows the active threshold."""
    body = await read_score_body(request, state.settings.max_batch)
    results = await score_body(state, body)
    return _json({"model": _model_ref(state), "results": results})


@router.post(
    "/reconstruct",
    response_model=ReconstructResponse,
    responses=ERRORS,
    openapi_extra=_openapi_body(ScoreRequest, ColumnarScoreRequest),
    tags=["scoring"],
)
async def reconstruct(request: Request, state: ServiceState = Depends(get_state)) -> Response:
    """Reconstruct records at the posterior mean: denoised values, missing ones imputed."""
    body = await read_score_body(request, state.settings.max_batch)
    detector, _ = state.loaded()
    results = await run_in_threadpool(lambda: detector.reconstruct(body_columns(detector, body)))
    return _json({"model": _model_ref(state), "results": results})


@router.post(
    "/sample",
    response_model=SampleResponse,
    responses=ERRORS,
    openapi_extra=_openapi_body(SampleRequest),
    tags=["scoring"],
)
async def sample(request: Request, state: ServiceState = Depends(get_state)) -> Response:
    """Draw new records from the model (z from the prior, then x from p(x|z))."""
    body = await read_body(request, SampleRequest)
    if body.n > state.settings.max_samples:
        raise ApiError(
            413,
            f"n = {body.n} exceeds the limit of {state.settings.max_samples} (VAE_ANOMALY_MAX_SAMPLES)",
            "too_many_samples",
            ("body", "n"),
        )
    detector, _ = state.loaded()
    seed = body.seed if body.seed is not None else secrets.randbits(62)
    samples = await run_in_threadpool(detector.sample, body.n, seed, body.temperature)
    return _json({"model": _model_ref(state), "seed": seed, "samples": samples})


def _thresholds_payload(thresholds: ThresholdSet) -> dict[str, Any]:
    return {
        "active": thresholds.active,
        "thresholds": {
            name: {"value": t.value, "target_fpr": t.target_fpr} for name, t in thresholds.thresholds.items()
        },
    }


@router.get("/thresholds", response_model=ThresholdsResponse, tags=["thresholds"])
async def get_thresholds(state: ServiceState = Depends(get_state)) -> Response:
    """The named thresholds and the active one."""
    detector, _ = state.loaded()
    return _json(_thresholds_payload(detector.thresholds))


def require_admin(request: Request, state: ServiceState = Depends(get_state)) -> None:
    """Bearer-token check for admin endpoints, comparing in constant time."""
    token = state.settings.api_token
    if token is None or not token.get_secret_value():
        raise ApiError(
            403,
            "admin endpoints are disabled: set VAE_ANOMALY_API_TOKEN on the server to enable them",
            "admin_disabled",
        )
    header = request.headers.get("authorization", "")
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer" or not given:
        raise ApiError(
            401,
            "missing bearer token: send 'Authorization: Bearer <token>'",
            "not_authenticated",
            headers={"WWW-Authenticate": "Bearer"},
        )
    if not secrets.compare_digest(given.strip().encode(), token.get_secret_value().encode()):
        raise ApiError(403, "invalid token", "forbidden")


@router.put(
    "/thresholds/{name}",
    response_model=ThresholdsResponse,
    responses=ADMIN_ERRORS,
    dependencies=[Depends(require_admin)],
    openapi_extra=_openapi_body(ThresholdUpdate),
    tags=["thresholds"],
)
async def put_threshold(name: str, request: Request, state: ServiceState = Depends(get_state)) -> Response:
    """Create or update a threshold by score value or by target false-positive rate."""
    if not THRESHOLD_NAME.fullmatch(name):
        raise ApiError(
            422,
            "threshold names use lowercase letters, digits, '_' and '-' (1-64 characters)",
            "name_pattern",
            ("path", "name"),
        )
    body = await read_body(request, ThresholdUpdate)
    detector, _ = state.loaded()
    with state.threshold_lock:
        current = detector.thresholds
        if body.value is not None:
            updated = current.with_value(name, body.value)
        else:
            assert body.target_fpr is not None
            updated = current.with_target(name, body.target_fpr)
        state.replace_thresholds(updated)
    return _json(_thresholds_payload(updated))


@router.put(
    "/active-threshold",
    response_model=ThresholdsResponse,
    responses={**ADMIN_ERRORS, 404: {"model": ErrorResponse, "description": "unknown threshold"}},
    dependencies=[Depends(require_admin)],
    openapi_extra=_openapi_body(ActiveThresholdUpdate),
    tags=["thresholds"],
)
async def put_active_threshold(request: Request, state: ServiceState = Depends(get_state)) -> Response:
    """Choose the threshold behind `is_anomaly`."""
    body = await read_body(request, ActiveThresholdUpdate)
    detector, _ = state.loaded()
    with state.threshold_lock:
        current = detector.thresholds
        if body.name not in current.thresholds:
            known = ", ".join(sorted(current.thresholds))
            raise ApiError(404, f"no threshold named {body.name!r}; known: {known}", "not_found", ("body", "name"))
        updated = current.with_active(body.name)
        state.replace_thresholds(updated)
    return _json(_thresholds_payload(updated))


@router.get("/model", tags=["model"])
async def get_model(state: ServiceState = Depends(get_state)) -> Response:
    """Metadata of the loaded model: ids, schema, architecture, scoring, training summary, device."""
    detector, _ = state.loaded()
    m = detector.manifest
    return _json(
        {
            "id": m.model_id,
            "version": m.version,
            "kind": m.kind,
            "device": str(detector.device),
            "created_at": m.created_at,
            "format_version": m.format_version,
            "schema": m.feature_schema.model_dump(mode="json"),
            "network": m.network.model_dump(mode="json"),
            "scoring": m.scoring.model_dump(mode="json"),
            "calibration_rows": len(m.calibration_scores),
            "thresholds": _thresholds_payload(detector.thresholds),
            "training": m.training,
            "library_versions": m.library_versions,
        }
    )


@router.get("/healthz", tags=["operations"])
async def healthz() -> dict[str, str]:
    """The process is alive."""
    return {"status": "ok"}


@router.get("/readyz", tags=["operations"])
async def readyz(state: ServiceState = Depends(get_state)) -> Response:
    """The model is loaded and warmed up (503 until then)."""
    if state.ready:
        return _json({"status": "ready"})
    return _json({"status": "loading"}, status=503)
