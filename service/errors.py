"""Maps errors to HTTP statuses with one body shape everywhere:
`{"detail": [{"loc": [...], "msg": "...", "type": "..."}]}`, as FastAPI's own 422s."""

from __future__ import annotations

import logging

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from vae_anomaly.model.errors import InputError, InputTooLargeError, UnsupportedError

logger = logging.getLogger(__name__)


class ApiError(Exception):
    """An error answered with `status` and one detail item."""

    def __init__(
        self, status: int, msg: str, kind: str, loc: tuple[str | int, ...] = (), headers: dict[str, str] | None = None
    ):
        super().__init__(msg)
        self.status = status
        self.msg = msg
        self.kind = kind
        self.loc = loc
        self.headers = headers


def error_body(items: list[dict]) -> bytes:
    return orjson.dumps({"detail": items})


def _response(status: int, items: list[dict], headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": items}, status_code=status, headers=headers)


ErrorParts = tuple[int, list[dict], "dict[str, str] | None"]


def error_parts(exc: Exception) -> ErrorParts | None:
    """(status, detail items, headers) for the errors the model and the routes raise on purpose,
    None for anything else. The exception handlers below and the `/score` fast path
    (service/score_path.py) answer through this, so both give the same bodies."""
    if isinstance(exc, ApiError):
        return exc.status, [{"loc": list(exc.loc), "msg": exc.msg, "type": exc.kind}], exc.headers
    if isinstance(exc, InputTooLargeError):  # inputs that together would cost too much to decode
        items = [
            {"loc": ["body", *issue.loc], "msg": f"{issue.msg} (VAE_ANOMALY_MAX_REQUEST_PIXELS)", "type": issue.type}
            for issue in exc.issues
        ]
        return 413, items, None
    if isinstance(exc, InputError):
        return 422, [{"loc": ["body", *issue.loc], "msg": issue.msg, "type": issue.type} for issue in exc.issues], None
    if isinstance(exc, UnsupportedError):  # what the loaded model cannot do by its kind or family: a 422 saying why
        loc = ["body", exc.field] if exc.field else ["body"]
        return 422, [{"loc": loc, "msg": str(exc), "type": exc.type}], None
    return None


INTERNAL_ERROR = [{"loc": [], "msg": "internal error; see the server log", "type": "internal"}]


async def _known_error(_: Request, exc: Exception) -> JSONResponse:
    parts = error_parts(exc)
    assert parts is not None
    return _response(*parts)


async def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    items = [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in exc.errors()]
    return _response(422, items)


async def _http_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    detail = exc.detail if isinstance(exc.detail, list) else [{"loc": [], "msg": str(exc.detail), "type": "http"}]
    return _response(exc.status_code, detail, getattr(exc, "headers", None))


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    logger.exception("unhandled error on %s %s", request.method, request.url.path)
    return _response(500, INTERNAL_ERROR)


def install_error_handlers(app: FastAPI) -> None:
    for known in (ApiError, InputError, InputTooLargeError, UnsupportedError):
        app.add_exception_handler(known, _known_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
