"""The Open Inference Protocol (KServe V2, also Triton's HTTP API) on top of the `/score` path, so
KServe and Triton clients call the service unchanged.

Routes: `GET /v2`, `/v2/health/live`, `/v2/health/ready`, `/v2/models/{name}`,
`/v2/models/{name}/ready` (and the `/versions/{version}` forms), `POST /v2/models/{name}/infer`.

Mapping (tabular models, whose kind reads `records`): one input tensor per feature, named like the
feature, shape `[n]` or `[n, 1]`, `data` flat or nested; numeric features take FP16/32/64 or
INT/UINT tensors, boolean ones BOOL, categorical ones BYTES (strings). **Missing values**: a JSON
`null` in `data` (JSON has no NaN), or a feature's tensor left out altogether, is a missing value,
refused as for `/score` where the schema makes the feature required. The n records then take the
`/score` path (checks, micro-batching, metrics), and the outputs are `score` (FP64), `p_value` (FP64)
and `is_anomaly` (BOOL), each of shape `[n]`, or those named in the request's `outputs`.

Tensors may also come as binary data after the JSON, and outputs go back that way when asked
(the `binary_tensor_data` extension, what KServe's and Triton's clients send by default for numpy
arrays: `service.v2_binary`); in binary, a NaN is a missing value.

Images and sequences have no tensor mapping here yet: for them every `/v2/models/...` route but
`ready` answers 400 with a message saying so (use `/score`).

Errors take the protocol's shape, `{"error": "<message>"}`: 400 for a bad request (the message
names the tensor and the problem), 404 for an unknown model or version.
"""

from __future__ import annotations

from importlib import metadata
from typing import Any

import orjson
from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from vae_anomaly.model.detector import Detector
from vae_anomaly.model.errors import InputError, ModelError
from vae_anomaly.service.batching import score_body
from vae_anomaly.service.errors import ApiError
from vae_anomaly.service.metrics import ModelMetrics
from vae_anomaly.service.state import ServiceState, get_state
from vae_anomaly.service.v2_binary import HEADER, BinaryDataError, encode_output, read_inputs, split_body

router = APIRouter(prefix="/v2", tags=["open inference protocol (KServe V2)"])

NUMERIC_TYPES = frozenset(
    {"FP16", "FP32", "FP64", "INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64"}
)
FEATURE_TYPES = {"numeric": "FP64", "boolean": "BOOL", "categorical": "BYTES"}
ACCEPTED = {"numeric": NUMERIC_TYPES, "boolean": frozenset({"BOOL"}), "categorical": frozenset({"BYTES"})}
OUTPUTS = {"score": "FP64", "p_value": "FP64", "is_anomaly": "BOOL"}


class V2Error(Exception):
    """Answered as the protocol's error object, `{"error": message}`."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


class InferInput(BaseModel):
    """One request tensor (`$request_input` of the spec)."""

    model_config = ConfigDict(extra="forbid")

    name: str
    shape: list[int] = Field(min_length=1)
    datatype: str
    parameters: dict[str, Any] | None = None
    data: list[Any] | None = None  # None when the tensor comes as binary data (`service.v2_binary`)


class InferOutputRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    parameters: dict[str, Any] | None = None


class InferRequest(BaseModel):
    """`$inference_request` of the spec."""

    model_config = ConfigDict(extra="forbid")

    id: str | None = None
    model_name: str | None = None  # KServe's client repeats the path's model name here
    model_version: str | None = None
    parameters: dict[str, Any] | None = None
    inputs: list[InferInput] = Field(min_length=1)
    outputs: list[InferOutputRequest] | None = None


def _json(payload: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(payload), status_code=status, media_type="application/json")


def _error(status: int, message: str) -> Response:
    return _json({"error": message}, status)


def model_name(state: ServiceState) -> str:
    return state.settings.model_name


def _check_model(state: ServiceState, name: str, version: str | None = None) -> tuple[Detector, ModelMetrics]:
    """The loaded model's snapshot (one per request), if `name` (and `version`) are the served ones."""
    if name != model_name(state):
        raise V2Error(404, f"unknown model {name!r}; this server serves {model_name(state)!r}")
    detector, metrics = state.loaded()
    if version is not None and version != detector.manifest.version:
        raise V2Error(404, f"model {name!r} has no version {version!r}; it serves {detector.manifest.version!r}")
    return detector, metrics


def _features(detector: Detector) -> list[Any]:
    if "records" not in detector.kind.input_fields:
        raise V2Error(
            400,
            f"the V2 protocol here maps one tensor per feature of a table; this model is {detector.kind.expected_input}"
            " (use /score)",
        )
    return list(detector.kind.schema.features)  # type: ignore[attr-defined]


def _flatten(values: list[Any]) -> list[Any]:
    flat: list[Any] = []
    for value in values:
        if isinstance(value, list):
            flat.extend(_flatten(value))
        else:
            flat.append(value)
    return flat


def _records(detector: Detector, body: InferRequest) -> list[dict[str, Any]]:
    """The request tensors as `/score` records (see the module docstring for the mapping)."""
    features = {feature.name: feature for feature in _features(detector)}
    n: int | None = None
    columns: dict[str, list[Any]] = {}
    for tensor in body.inputs:
        feature = features.get(tensor.name)
        if feature is None:
            raise V2Error(400, f"input {tensor.name!r} is not a feature of the model; features: {', '.join(features)}")
        if tensor.name in columns:
            raise V2Error(400, f"input {tensor.name!r} is given twice")
        if tensor.datatype not in ACCEPTED[feature.type]:
            raise V2Error(
                400,
                f"input {tensor.name!r}: datatype {tensor.datatype} does not fit a {feature.type} feature "
                f"(use {FEATURE_TYPES[feature.type]})",
            )
        if tensor.data is None:
            raise V2Error(400, f"input {tensor.name!r}: no data (give `data`, or `binary_data_size` and binary data)")
        if len(tensor.shape) > 2 or (len(tensor.shape) == 2 and tensor.shape[1] != 1):
            raise V2Error(400, f"input {tensor.name!r}: shape {tensor.shape}; one feature per tensor: [n] or [n, 1]")
        data = _flatten(tensor.data)
        if tensor.shape[0] != len(data) or tensor.shape[0] < 0:
            raise V2Error(400, f"input {tensor.name!r}: shape {tensor.shape} but {len(data)} values in data")
        if n is not None and len(data) != n:
            raise V2Error(400, f"input {tensor.name!r} has {len(data)} rows but an earlier input has {n}")
        n = len(data)
        columns[tensor.name] = data
    assert n is not None  # inputs has at least one tensor
    absent = [None] * n  # a tensor left out: every row's value missing
    return [{name: columns.get(name, absent)[i] for name in features} for i in range(n)]


@router.get("")
async def server_metadata() -> Response:
    """Server metadata: name, version, extensions."""
    try:
        version = metadata.version("vae-anomaly")
    except metadata.PackageNotFoundError:  # pragma: no cover - running from a source tree
        version = "unknown"
    return _json({"name": "vae-anomaly", "version": version, "extensions": ["binary_tensor_data"]})


@router.get("/health/live")
async def live() -> Response:
    """200 while the process answers."""
    return _json({"live": True})


@router.get("/health/ready")
async def ready(state: ServiceState = Depends(get_state)) -> Response:
    """200 once the model is loaded and warmed up; 400 (a 4xx, as the protocol asks) before."""
    return _json({"ready": state.ready}, 200 if state.ready else 400)


def _issue(loc: tuple[str | int, ...], msg: str) -> str:
    """A `/score` input issue in the protocol's terms: records.3.a → input 'a', row 3."""
    if len(loc) == 3 and loc[0] == "records":
        return f"input {loc[2]!r}, row {loc[1]}: {msg}"
    return f"{'.'.join(str(p) for p in loc)}: {msg}"


async def _guard(call: Any) -> Response:
    """Run a handler body, answering every failure in the protocol's error shape."""
    try:
        return await call()
    except V2Error as exc:
        return _error(exc.status, exc.message)
    except ApiError as exc:
        where = ".".join(str(p) for p in exc.loc[1:])
        return _error(exc.status if exc.status < 500 else 400, f"{where}: {exc.msg}" if where else exc.msg)
    except InputError as exc:
        return _error(400, "; ".join(_issue(issue.loc, issue.msg) for issue in exc.issues[:10]))
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        return _error(400, f"{'.'.join(str(p) for p in first['loc'])}: {first['msg']}")
    except (ModelError, BinaryDataError) as exc:
        return _error(400, str(exc))


@router.get("/models/{name}/ready")
@router.get("/models/{name}/versions/{version}/ready")
async def model_ready(name: str, version: str | None = None, state: ServiceState = Depends(get_state)) -> Response:
    async def run() -> Response:
        _check_model(state, name, version)
        return _json({"name": name, "ready": state.ready}, 200 if state.ready else 400)

    return await _guard(run)


@router.get("/models/{name}")
@router.get("/models/{name}/versions/{version}")
async def model_metadata(name: str, version: str | None = None, state: ServiceState = Depends(get_state)) -> Response:
    """Model metadata: one input tensor per feature, the three outputs."""

    async def run() -> Response:
        detector, _ = _check_model(state, name, version)
        inputs = [{"name": f.name, "datatype": FEATURE_TYPES[f.type], "shape": [-1]} for f in _features(detector)]
        outputs = [{"name": key, "datatype": datatype, "shape": [-1]} for key, datatype in OUTPUTS.items()]
        return _json(
            {
                "name": name,
                "versions": [detector.manifest.version],
                "platform": "pytorch_vae-anomaly",
                "inputs": inputs,
                "outputs": outputs,
            }
        )

    return await _guard(run)


def _binary_outputs(body: InferRequest, wanted: list[str]) -> set[str]:
    """The outputs to send as binary data: those whose `binary_data` parameter is true, or every
    output without one when the request's `binary_data_output` is true."""
    default = bool((body.parameters or {}).get("binary_data_output", False))
    asked = {o.name: (o.parameters or {}).get("binary_data") for o in body.outputs or []}
    return {key for key in wanted if (asked.get(key) if asked.get(key) is not None else default)}


def _outputs(payload: dict[str, Any], results: list[dict[str, Any]], wanted: list[str], binary: set[str]) -> Response:
    """The response: outputs in JSON `data`, or, for those in `binary`, as binary data after the JSON
    (`binary_data_size` in each one's parameters, the JSON's length in `Inference-Header-Content-Length`)."""
    outputs, chunks = [], []
    for key in wanted:
        values = [r[key] for r in results]
        output: dict[str, Any] = {"name": key, "datatype": OUTPUTS[key], "shape": [len(results)]}
        if key in binary:
            chunks.append(encode_output(values, OUTPUTS[key]))
            output["parameters"] = {"binary_data_size": len(chunks[-1])}
        else:
            output["data"] = values
        outputs.append(output)
    header = orjson.dumps({**payload, "outputs": outputs})
    if not chunks:
        return Response(header, media_type="application/json")
    return Response(
        header + b"".join(chunks),
        media_type="application/octet-stream",
        headers={"Inference-Header-Content-Length": str(len(header))},
    )


@router.post("/models/{name}/infer")
@router.post("/models/{name}/versions/{version}/infer")
async def infer(
    name: str, request: Request, version: str | None = None, state: ServiceState = Depends(get_state)
) -> Response:
    """Score the request's rows; outputs `score`, `p_value`, `is_anomaly` (see the module docstring)."""

    async def run() -> Response:
        detector, metrics = _check_model(state, name, version)
        _features(detector)  # an image or sequence model is refused before its tensors are read
        header, binary = split_body(await request.body(), request.headers.get(HEADER))
        try:
            raw = orjson.loads(header)
        except orjson.JSONDecodeError as exc:
            raise V2Error(400, f"malformed JSON (NaN and Infinity are not JSON): {exc}") from exc
        try:
            body = InferRequest.model_validate(raw)
        except ValidationError as exc:
            first = exc.errors(include_url=False)[0]
            raise V2Error(400, f"{'.'.join(str(p) for p in first['loc']) or 'body'}: {first['msg']}") from exc
        for field, value, served in (
            ("model_name", body.model_name, name),
            ("model_version", body.model_version, version),
        ):
            if value not in (None, "") and served is not None and value != served:
                raise V2Error(400, f"{field} {value!r} in the body differs from {served!r} in the path")
        read_inputs(body.inputs, binary)
        wanted = [o.name for o in body.outputs] if body.outputs else list(OUTPUTS)
        unknown = [o for o in wanted if o not in OUTPUTS]
        if unknown:
            raise V2Error(400, f"unknown output {unknown[0]!r}; outputs: {', '.join(OUTPUTS)}")
        records = _records(detector, body)
        if len(records) > state.settings.max_batch:
            raise V2Error(
                400, f"{len(records)} rows exceed the limit of {state.settings.max_batch} per request; split the batch"
            )
        parsed = detector.kind.parse_request({"records": records, "explain": 0})
        results = await score_body(state, detector, metrics, parsed)
        payload: dict[str, Any] = {"model_name": name, "model_version": detector.manifest.version}
        if body.id is not None:
            payload["id"] = body.id
        return _outputs(payload, results, wanted, _binary_outputs(body, wanted))

    return await _guard(run)
