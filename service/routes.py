"""Thin handlers: check the envelope, call the detector, build the response."""

from __future__ import annotations

import logging
import math
import secrets
from pathlib import Path
from typing import Any, TypeVar

import orjson
from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, ValidationError

from vae_anomaly.model.detector import Detector, Interpolation, interpolation_count_message
from vae_anomaly.model.kinds import KINDS
from vae_anomaly.model.kinds.base import RequestBody, RequestIds
from vae_anomaly.model.thresholds import THRESHOLD_NAME, ThresholdSet, fpr_guaranteed
from vae_anomaly.service.batching import check_inputs, input_limits, score_body
from vae_anomaly.service.errors import ApiError
from vae_anomaly.service.schemas import (
    ActiveThresholdUpdate,
    EncodeResponse,
    ErrorResponse,
    InterpolateOptions,
    InterpolateResponse,
    ReconstructResponse,
    SampleRequest,
    SampleResponse,
    ScoreResponse,
    ThresholdsResponse,
    ThresholdUpdate,
)
from vae_anomaly.service.state import ServiceState, get_state
from vae_anomaly.service.threshold_file import ThresholdFileError, artifact_thresholds, write_through

router = APIRouter()
logger = logging.getLogger(__name__)
Body = TypeVar("Body", bound=BaseModel)

ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse, "description": "malformed JSON"},
    413: {"model": ErrorResponse, "description": "too many records or images"},
    422: {
        "model": ErrorResponse,
        "description": "a record or image does not fit the model (schema, image size, encoding), the body is "
        "of another kind (records for an image model, images for a tabular one), or the model's family "
        "cannot do what was asked (samples from an autoencoder)",
    },
}
ADMIN_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse, "description": "malformed JSON"},
    401: {"model": ErrorResponse, "description": "no bearer token"},
    403: {"model": ErrorResponse, "description": "wrong token, or admin endpoints disabled"},
    422: {"model": ErrorResponse, "description": "invalid body"},
}


def _openapi_body(*models: type[BaseModel]) -> dict[str, Any]:
    """Document a body that the handler parses itself (orjson: strict JSON, no NaN/Infinity); with
    several models, the body is one of them (tabular records or images, by the model's kind)."""
    return _openapi_schemas([model.model_json_schema() for model in models])


def _openapi_schemas(schemas: list[dict[str, Any]]) -> dict[str, Any]:
    schema = schemas[0] if len(schemas) == 1 else {"oneOf": schemas}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


def _with_options(schema: dict[str, Any], options: type[BaseModel]) -> dict[str, Any]:
    """A body's JSON schema with the fields of `options` added (the `/interpolate` body is a
    `/score` body plus `steps`)."""
    extra = options.model_json_schema()
    return {**schema, "properties": {**schema.get("properties", {}), **extra["properties"]}}


INPUT_BODIES = tuple(model for kind in KINDS.values() for model in kind.request_models)
"""Every registered kind's request envelopes, for the OpenAPI document of `/score` and `/reconstruct`."""


def request_examples(detector: Detector) -> dict[str, dict[str, Any]]:
    """Path → a request body the loaded model answers with 2xx, for the OpenAPI document (which
    `/docs` puts in its editors; tests/service/test_openapi_examples.py sends each one). Built from
    the model: its features or geometry (`example_body`), its condition, its active threshold."""
    one, two = detector.kind.example_body(1), detector.kind.example_body(2)
    sample: dict[str, Any] = {"n": 2, "seed": 0}
    spec = detector.kind.condition_spec()
    if spec is not None:
        sample["condition"] = spec.example()
    return {
        "/score": one,
        "/reconstruct": one,
        "/encode": one,
        "/interpolate": {**two, "steps": 5},
        "/sample": sample,
        "/thresholds/{name}": {"target_fpr": 0.01},
        "/active-threshold": {"name": detector.thresholds.active},
        "/admin/reload": {},  # re-read the directory being served
    }


def _check_kind(data: dict[str, Any], detector: Detector) -> None:
    """A body of another kind gets a 422 that says which kind the loaded model expects."""
    kind = detector.kind
    if any(name in data for name in kind.input_fields):
        return
    for other in KINDS.values():
        wrong = [name for name in other.input_fields if name in data and other.name != kind.name]
        if wrong:
            raise ApiError(
                422,
                f"the loaded model is {kind.expected_input}, not '{wrong[0]}' (which is for {other.name} models)",
                "wrong_model_kind",
                ("body", wrong[0]),
            )


async def _read_json(request: Request) -> dict[str, Any]:
    """Parse the body as strict JSON (orjson refuses NaN and Infinity, which Python's json accepts)."""
    return parse_json(await request.body())


def parse_json(raw: bytes) -> dict[str, Any]:
    """A body → its JSON object; 400 for malformed JSON (NaN and Infinity included), 422 for another value."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ApiError(
            400, f"malformed JSON (NaN and Infinity are not JSON): {exc}", "json_invalid", ("body",)
        ) from exc
    if not isinstance(data, dict):
        raise ApiError(422, "expected a JSON object", "model_type", ("body",))
    return data


async def read_body(request: Request, model: type[Body]) -> Body:
    """Parse the body as strict JSON, then validate it (inputs to score: `_read_inputs`)."""
    return _validate(model, await _read_json(request))


def _validate(model: type[Body], data: dict[str, Any]) -> Body:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise _validation_error(exc) from exc


def _validation_error(exc: ValidationError) -> ApiError:
    first = exc.errors(include_url=False)[0]
    return ApiError(422, first["msg"], first["type"], ("body", *first["loc"]))


BATCH_FIELDS = tuple(field for kind in KINDS.values() for field in kind.batch_fields)


def _check_batch(data: dict[str, Any], limit: int) -> None:
    for field in BATCH_FIELDS:
        items = data.get(field)
        if isinstance(items, list) and len(items) > limit:
            raise ApiError(
                413,
                f"{len(items)} {field} exceed the limit of {limit} per request (VAE_ANOMALY_MAX_BATCH); "
                "split the batch",
                "too_many_records",
                ("body", field),
            )


def _model_ref(detector: Detector) -> dict[str, str]:
    """The model that served the request: the one from its snapshot, not whatever is loaded now."""
    return {"id": detector.manifest.model_id, "version": detector.manifest.version}


def _json(payload: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(payload), status_code=status, media_type="application/json")


@router.post(
    "/score",
    response_model=ScoreResponse,
    response_model_exclude_none=True,
    responses=ERRORS,
    openapi_extra=_openapi_body(*INPUT_BODIES),
    tags=["scoring"],
)
async def score(request: Request, state: ServiceState = Depends(get_state)) -> Response:
    """Score records or images: higher = more anomalous; `is_anomaly` follows the active threshold."""
    # Served by service/score_path.py, which answers `POST /score` before FastAPI's routing; this
    # handler documents the route and serves it when that is off (VAE_ANOMALY_SCORE_FAST_PATH=false).
    return Response(await score_response(state, await request.body()), media_type="application/json")


async def score_response(state: ServiceState, raw: bytes) -> bytes:
    """The `/score` response body for a request body: parsed and checked, scored (micro-batched
    when small), the results in input order with the body's ids."""
    detector, metrics = state.loaded()  # one model for the whole request, even across a reload
    body = _parse_inputs(parse_json(raw), state, detector)
    results = await score_body(state, detector, metrics, body)
    return orjson.dumps({"model": _model_ref(detector), "results": _with_ids(body, results)})


def _with_ids(body: RequestBody, results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Echo the body's optional `ids` as `id`, first in each result (one result per input)."""
    ids = body.ids if isinstance(body, RequestIds) else None
    if ids is None:
        return results
    return [{"id": id_, **result} for id_, result in zip(ids, results, strict=True)]


async def _read_inputs(request: Request, state: ServiceState, detector: Detector) -> RequestBody:
    """The body of `/score` or `/reconstruct`, parsed by the loaded model's kind (records, a
    columnar table, images, ...); a body of another kind gets a 422 saying which is expected."""
    return _parse_inputs(await _read_json(request), state, detector)


def _parse_inputs(data: dict[str, Any], state: ServiceState, detector: Detector) -> RequestBody:
    _check_kind(data, detector)
    _check_batch(data, state.settings.max_batch)
    try:
        return detector.kind.parse_request(data)
    except ValidationError as exc:
        raise _validation_error(exc) from exc


@router.post(
    "/reconstruct",
    response_model=ReconstructResponse,
    response_model_exclude_none=True,
    responses=ERRORS,
    openapi_extra=_openapi_body(*INPUT_BODIES),
    tags=["scoring"],
)
async def reconstruct(request: Request, state: ServiceState = Depends(get_state)) -> Response:
    """Reconstruct at the posterior mean. Records: denoised values, missing ones imputed. Images:
    the reconstruction and an error heatmap over the input, both base64 PNGs at the input's size."""
    detector, _ = state.loaded()
    body = await _read_inputs(request, state, detector)
    max_pixels = input_limits(state.settings)
    results = await state.compute(lambda: detector.reconstruct(check_inputs(detector, body, max_pixels)))
    return _json({"model": _model_ref(detector), "results": _with_ids(body, results)})


@router.post(
    "/sample",
    response_model=SampleResponse,
    response_model_exclude_none=True,
    responses=ERRORS,
    openapi_extra=_openapi_body(SampleRequest),
    tags=["scoring"],
)
async def sample(request: Request, state: ServiceState = Depends(get_state)) -> Response:
    """Draw new records or images from the model (z from the prior, then x from p(x|z)); image
    models can return them tiled into one PNG (`grid`). Conditional models (cvae) draw x given the
    body's `condition`, which they require."""
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
    if body.grid:  # kinds without pictures answer 422 (`UnsupportedError`), as do families without samples
        grid = await state.compute(lambda: detector.sample_grid(body.n, seed, body.temperature, body.condition))
        return _json({"model": _model_ref(detector), "seed": seed, "grid": grid})
    samples = await state.compute(lambda: detector.sample(body.n, seed, body.temperature, body.condition))
    return _json({"model": _model_ref(detector), "seed": seed, "samples": samples})


@router.post(
    "/encode",
    response_model=EncodeResponse,
    response_model_exclude_none=True,
    responses=ERRORS,
    openapi_extra=_openapi_body(*INPUT_BODIES),
    tags=["latent space"],
)
async def encode(request: Request, state: ServiceState = Depends(get_state)) -> Response:
    """The latent code of each input of a `/score` body: the posterior mean, and its standard
    deviation for families with a posterior (not for deterministic autoencoders); in the order and
    with the ids (`row`, `timestamp` of sequence windows) that `/score` gives."""
    detector, _ = state.loaded()
    body = await _read_inputs(request, state, detector)
    max_pixels = input_limits(state.settings)
    results = await state.compute(lambda: detector.encode_results(check_inputs(detector, body, max_pixels)))
    return _json({"model": _model_ref(detector), "latent_dim": detector.network.latent_dim, "results": results})


INTERPOLATE_BODIES = [_with_options(model.model_json_schema(), InterpolateOptions) for model in INPUT_BODIES]


@router.post(
    "/interpolate",
    response_model=InterpolateResponse,
    responses=ERRORS,
    openapi_extra=_openapi_schemas(INTERPOLATE_BODIES),
    tags=["latent space"],
)
async def interpolate(request: Request, state: ServiceState = Depends(get_state)) -> Response:
    """A `/score` body with exactly two inputs, plus `steps`: the model's most likely input at
    `steps` codes on the straight line between the two inputs' codes, both ends included (records,
    base64 PNGs, or sensor windows). A sequence body counts its windows: a series of window + 1
    rows gives two. Another count of inputs gets a 422."""
    detector, _ = state.loaded()
    data = await _read_json(request)
    options = _validate(InterpolateOptions, {"steps": data.pop("steps")} if "steps" in data else {})
    body = _parse_inputs(data, state, detector)
    kind = detector.kind
    field = next((f for f in (*kind.batch_fields, *kind.input_fields) if f in data), None)
    loc: tuple[str, ...] = ("body", field) if field else ("body",)
    max_pixels = input_limits(state.settings)

    def run() -> Interpolation:
        inputs = check_inputs(detector, body, max_pixels)
        count = kind.count(inputs)
        if count != 2:
            raise ApiError(422, interpolation_count_message(count, kind.result_unit), "input_count", loc)
        return detector.interpolate(inputs, options.steps)

    result = await state.compute(run)
    return _json(
        {"model": _model_ref(detector), "t": result.t.tolist(), "codes": result.codes.tolist(), "points": result.points}
    )


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


async def require_admin(request: Request, state: ServiceState = Depends(get_state)) -> None:
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
    with state.threshold_lock:
        detector, _ = state.loaded()  # under the lock: a reload swaps the model while holding it
        current = detector.thresholds
        path = state.settings.thresholds_file
        if path is not None:  # every worker and replica reading the file gets it
            updated = _write_through(path, detector, {"name": name, "value": body.value, "target_fpr": body.target_fpr})
        elif body.value is not None:
            updated = current.with_value(name, body.value)
        else:
            assert body.target_fpr is not None
            updated = current.with_target(name, body.target_fpr)
        state.replace_thresholds(updated)
    payload = {**_thresholds_payload(updated), "applies_to": _applies_to(state)}
    warnings = same_value_warnings(updated, name) if body.target_fpr is not None else []
    for warning in warnings:
        logger.warning("PUT /thresholds/%s: %s", name, warning)
    if warnings:
        payload["warnings"] = warnings
    return _json(payload)


def same_value_warnings(thresholds: ThresholdSet, name: str) -> list[str]:
    """Say when threshold `name`'s target FPR landed on the value of another threshold: both then
    flag exactly the same records, usually because the calibration set is too small to tell the
    two rates apart (a target below 1/(n+1) maps to the largest calibration score)."""
    mine = thresholds.thresholds[name]
    n = thresholds.calibration.size
    warnings = []
    for other, threshold in thresholds.thresholds.items():
        if other != name and threshold.value == mine.value:
            text = f"target_fpr {mine.target_fpr} maps to score {mine.value:.6g}, the value of threshold {other!r}"
            if threshold.target_fpr is not None:
                text += f" (target_fpr {threshold.target_fpr})"
            text += "; both flag the same records"
            if mine.target_fpr is not None and not fpr_guaranteed(n, mine.target_fpr):
                needed = math.ceil(1 / mine.target_fpr - 1)
                text += f": {n} calibration scores cannot resolve it (at least {needed} are needed)"
            warnings.append(text)
    return warnings


def _write_through(path: Path, detector: Detector, change: dict[str, Any]) -> ThresholdSet:
    try:
        return write_through(path, artifact_thresholds(detector), change)
    except ThresholdFileError as exc:
        raise ApiError(409, str(exc), "thresholds_file") from exc


def _applies_to(state: ServiceState) -> str:
    """Who sees a threshold change: the file's readers, or the worker that answered."""
    path = state.settings.thresholds_file
    return f"every worker and replica reading {path}" if path is not None else "this worker only"


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
    with state.threshold_lock:
        detector, _ = state.loaded()
        current = detector.thresholds
        if body.name not in current.thresholds:
            known = ", ".join(sorted(current.thresholds))
            raise ApiError(404, f"no threshold named {body.name!r}; known: {known}", "not_found", ("body", "name"))
        path = state.settings.thresholds_file
        updated = _write_through(path, detector, {"active": body.name}) if path else current.with_active(body.name)
        state.replace_thresholds(updated)
    return _json({**_thresholds_payload(updated), "applies_to": _applies_to(state)})


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
            "family": m.family,
            "device": str(detector.device),
            "created_at": m.created_at,
            "format_version": m.format_version,
            **detector.kind.describe(),
            "family_config": m.family_config.model_dump(mode="json"),
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
    """The model is loaded and warmed up (503 until then, and again while draining after SIGTERM)."""
    if state.ready and not state.drain.draining:
        return _json({"status": "ready"})
    return _json({"status": "loading"}, status=503)
