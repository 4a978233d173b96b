"""The request body size limit (`VAE_ANOMALY_MAX_BODY_BYTES`), enforced before anything parses.

`VAE_ANOMALY_MAX_BATCH` bounds records only after the whole body is in memory and parsed; this bounds
the memory a request can make the server hold. A declared `Content-Length` above the limit is
answered at once, without reading the body; a body without one (chunked) is counted as it streams
in and cut off at the first chunk past the limit. Both answer 413 in the error shape of
service/errors.py.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import ApiError, error_body


def too_large(limit: int, size: int | None = None) -> ApiError:
    got = f"{size} bytes" if size is not None else "more"
    return ApiError(
        413,
        f"request body of {got} exceeds the limit of {limit} bytes (VAE_ANOMALY_MAX_BODY_BYTES); split the batch",
        "body_too_large",
        ("body",),
    )


class BodySizeLimitMiddleware:
    """Refuses bodies over `limit` bytes: by `Content-Length` first, then by counting."""

    def __init__(self, app: ASGIApp, limit: int):
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = next((v for k, v in scope["headers"] if k == b"content-length"), None)
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await self._refuse(send, too_large(self.limit, int(declared)))
            return
        received = 0

        async def receive_limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
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
