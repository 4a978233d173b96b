"""Logs of the server: one JSON object per line (or plain text), a request id on every line logged
while a request is handled, and our own access log in place of uvicorn's.

What is logged of a request: method, path (without the query string), status, duration and the
request id. Never headers (the admin token travels in one), never the body unless
`VAE_ANOMALY_LOG_PAYLOADS` asks for it (records may hold personal data).
"""

from __future__ import annotations

import contextvars
import itertools
import json
import logging
import logging.handlers
import queue
import re
import secrets
import sys
import time
from datetime import datetime, timezone
from typing import Any

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

REQUEST_ID_HEADER = "X-Request-ID"
REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
"""An accepted `X-Request-ID`: what a proxy or a client generates (uuids, hex, dotted ids), short
enough to log, and nothing that could forge a log line or a header."""
PAYLOAD_LOG_BYTES = 4096

ACCESS_LOGGER = "vae_anomaly.access"
ACCESS_FIELDS = ("request_id", "method", "path", "status", "duration_ms", "payload")

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)


_ID_PREFIX = secrets.token_hex(8)
_ID_COUNTER = itertools.count()


def generated_request_id() -> str:
    """32 hex digits, unique per process and, with a random 64-bit prefix per process, across them.

    Not `uuid4().hex`: that reads 16 bytes from the OS per request, 7% of the event loop's time
    for single-record `/score` calls at 64 connections (py-spy, issue 15). Ids need not be secret."""
    return f"{_ID_PREFIX}{next(_ID_COUNTER) & 0xFFFFFFFFFFFFFFFF:016x}"


def accepted_request_id(given: str | None) -> str:
    """The client's id if it is well-formed, else a fresh one (a malformed id is not an error)."""
    if given is not None and REQUEST_ID.fullmatch(given):
        return given
    return generated_request_id()


class RequestIdFilter(logging.Filter):
    """Stamps every record with the id of the request being handled (None outside requests); the
    context variable follows the request into threadpool threads."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "request_id", None) is None:
            record.request_id = request_id_var.get()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, ISO 8601), level, logger, message, pid, request_id, the
    access fields when present, and the traceback under `exception`."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,
            "request_id": getattr(record, "request_id", None),
        }
        for name in ACCESS_FIELDS[1:]:
            if hasattr(record, name):
                entry[name] = getattr(record, name)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """`time level logger [request id] message`, with `-` outside requests."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        if getattr(record, "request_id", None) is None:
            record.request_id = "-"
        return super().format(record)


def resolve_log_format(log_format: str, stream: Any = None) -> str:
    """ "auto" → "text" when `stream` (default stderr) is a terminal, where a person reads it, else
    "json" (containers, files, log shippers); "json" and "text" stay as they are."""
    if log_format != "auto":
        return log_format
    stream = sys.stderr if stream is None else stream
    isatty = getattr(stream, "isatty", None)
    return "text" if isatty is not None and isatty() else "json"


class BackgroundStreamHandler(logging.handlers.QueueHandler):
    """Writes log records to a stream from a thread of its own: a request only puts its record on
    a queue, and formatting (JSON) and the write to stderr happen off the event loop. The access
    log's line per request took 15% of the event loop's time for single-record `/score` calls at
    64 connections on the 2-core VM, nearly all in formatting and `StreamHandler.emit` (py-spy,
    issue 15). Filters (the request id) still run in the thread that logs, where the request's
    context is; the formatter runs in the writer thread. Lines are written in the order logged;
    those still queued are written when the handler is closed (logging's shutdown at exit).
    """

    def __init__(self, stream: Any = None) -> None:
        super().__init__(queue.SimpleQueue())
        self.target = logging.StreamHandler(stream if stream is not None else sys.stderr)
        self.listener = logging.handlers.QueueListener(self.queue, self.target)  # type: ignore[arg-type]
        self.listener.start()
        self._stopped = False

    def setFormatter(self, fmt: logging.Formatter | None) -> None:
        self.target.setFormatter(fmt)

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        """The record as it is: the writer thread formats it (QueueHandler's own `prepare` formats
        here, in the logging thread, for queues that cross processes; this one does not)."""
        return record

    def flush(self) -> None:
        """Wait until every record queued so far is written."""
        if not self._stopped:
            self.listener.stop()  # drains the queue, then restarts below
            self.listener.start()
        self.target.flush()

    def close(self) -> None:
        if not self._stopped:
            self._stopped = True
            self.listener.stop()
        self.target.close()
        super().close()


def logging_config(log_format: str, level: str) -> dict[str, Any]:
    """A `logging.config.dictConfig` for `serve`, handed to uvicorn, which applies it in the
    supervisor and in each worker. uvicorn's own access log is switched off (`serve` passes
    `access_log=False`); ours comes from `AccessLogMiddleware`. `log_format` "auto" is resolved
    against stderr here, once, so the workers (which inherit stderr) log like the supervisor."""
    log_format = resolve_log_format(log_format)
    formatter = {"()": f"{__name__}.{JsonFormatter.__name__ if log_format == 'json' else TextFormatter.__name__}"}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"request_id": {"()": f"{__name__}.RequestIdFilter"}},
        "formatters": {"default": formatter},
        "handlers": {
            "default": {
                "()": f"{__name__}.{BackgroundStreamHandler.__name__}",
                "formatter": "default",
                "filters": ["request_id"],
                "stream": "ext://sys.stderr",
            }
        },
        "root": {"handlers": ["default"], "level": level.upper()},
        "loggers": {
            "uvicorn": {"handlers": [], "propagate": True},
            "uvicorn.error": {"handlers": [], "propagate": True},
            "uvicorn.access": {"handlers": [], "propagate": False},
        },
    }


class AccessLogMiddleware:
    """Gives each HTTP request an id (from `X-Request-ID` when well-formed, else generated), returns
    it in the response's `X-Request-ID`, and logs one access line when the request ends."""

    def __init__(self, app: ASGIApp, log_payloads: bool = False):
        self.app = app
        self.log_payloads = log_payloads
        self.logger = logging.getLogger(ACCESS_LOGGER)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"x-request-id"), None)
        request_id = accepted_request_id(given)
        token = request_id_var.set(request_id)
        started = time.perf_counter()
        status = 500  # unless a response starts
        payload = bytearray()

        async def receive_logged() -> Message:
            message = await receive()
            if message["type"] == "http.request" and len(payload) < PAYLOAD_LOG_BYTES:
                payload.extend(message.get("body", b"")[: PAYLOAD_LOG_BYTES - len(payload)])
            return message

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableHeaders(scope=message)[REQUEST_ID_HEADER] = request_id
            await send(message)

        try:
            await self.app(scope, receive_logged if self.log_payloads else receive, send_with_id)
        finally:
            extra: dict[str, Any] = {
                "request_id": request_id,
                "method": scope["method"],
                "path": scope["path"],
                "status": status,
                "duration_ms": round((time.perf_counter() - started) * 1000, 3),
            }
            if self.log_payloads:
                extra["payload"] = payload.decode("utf-8", "replace")
            self.logger.info("%s %s %d", scope["method"], scope["path"], status, extra=extra)
            request_id_var.reset(token)
