"""The request body size limit (`VAE_ANOMALY_MAX_BODY_BYTES`), enforced before anything parses.

`VAE_ANOMALY_MAX_BATCH` bounds records only after the whole body is in memory and parsed; this bounds
the memory a request can make the server hold. A declared `Content-Length` above the limit is
answered at once, without reading the body; a body without one (chunked) is counted as it streams
in and cut off at the first chunk past the limit. Both answer 413 in the error shape of
service/errors.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from vae_anomaly.service.errors import ApiError, error_body


def too_large(limit: int, size: int | None = None) -> ApiError:
    got = f"{size} bytes" if size is not None else "more"
    return ApiError(
        413,
        f"request body of {got} exceeds the limit of {limit} bytes (VAE_ANOMALY_MAX_BODY_BYTES); split the batch",
        "body_too_large",
        ("body",),
    )


def read_timed_out(seconds: float) -> ApiError:
    return ApiError(
        408,
        f"request body not received within {seconds:g} s (VAE_ANOMALY_READ_TIMEOUT_SECONDS)",
        "read_timeout",
        ("body",),
        headers={"Connection": "close"},
    )


async def _before(deadline: float, awaitable: Awaitable[Message]) -> Message:
    """`await awaitable`, or `asyncio.TimeoutError` once the loop's clock passes `deadline`.

    `asyncio.timeout_at` (Python >= 3.11) arms a timer on the request's own task; `wait_for` wraps
    the receive in a task of its own, whose creation was 3% of the event loop's time for
    single-record `/score` calls at 64 connections (py-spy, issue 15)."""
    timeout_at = getattr(asyncio, "timeout_at", None)
    if timeout_at is None:  # Python 3.10
        return await asyncio.wait_for(awaitable, max(deadline - asyncio.get_running_loop().time(), 0.0))
    async with timeout_at(deadline):
        return await awaitable


class BodySizeLimitMiddleware:
    """Refuses bodies over `limit` bytes: by `Content-Length` first, then by counting; and bodies
    that do not arrive within `read_timeout` seconds (a client that stops sending would otherwise
    hold the request, and its connection, for ever). Headers have the same deadline (service/protocol.py)."""

    def __init__(self, app: ASGIApp, limit: int, read_timeout: float | None = None):
        self.app = app
        self.limit = limit
        self.read_timeout = read_timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = next((v for k, v in scope["headers"] if k == b"content-length"), None)
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await self._refuse(send, too_large(self.limit, int(declared)))
            return
        received = 0
        complete = False
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.read_timeout if self.read_timeout is not None else None

        async def receive_limited() -> Message:
            nonlocal received, complete
            if complete or deadline is None:  # after the body: waits for a disconnect, unbounded
                message = await receive()
            else:  # one deadline for the whole body, not per chunk (a byte every 29 s would pass that)
                try:
                    message = await _before(deadline, receive())
                except asyncio.TimeoutError:
                    assert self.read_timeout is not None
                    raise read_timed_out(self.read_timeout) from None
            if message["type"] == "http.request":
                complete = not message.get("more_body", False)
                received += len(message.get("body", b""))
                if received > self.limit:
                    # Raised inside the handler's `await request.body()`: the app's ApiError handler
                    # answers it, and the rest of the body is never read (uvicorn closes the connection).
                    raise too_large(self.limit)
            return message

        await self.app(scope, receive_limited, send)

    @staticmethod
    async def _refuse(send: Send, error: ApiError) -> None:
        body = error_body([{"loc": list(error.loc), "msg": error.msg, "type": error.kind}])
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": error.status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
