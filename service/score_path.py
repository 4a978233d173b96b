"""`POST /score` answered before FastAPI's routing, dependency and response machinery.

Single records are the service's hot path: at 64 connections on the 2-core VM, FastAPI's router,
its exception and exit-stack middlewares, dependency solving and the `Request`/`Response` objects
took about a third of the event loop's time per request (py-spy, issue 15), more than checking the
record. `ScorePath` sits innermost of the app's own middlewares, so the request id, access log,
metrics, drain and body limit apply to `/score` as to every route; it reads the body, calls the same
`score_response` as the FastAPI route (service/routes.py), and answers errors through the same
`error_parts` as the exception handlers (service/errors.py), so bodies, statuses and headers are
those of the route. The route stays registered: `/docs` and the OpenAPI document describe it, and it
serves `/score` when `VAE_ANOMALY_SCORE_FAST_PATH=false`.
"""

from __future__ import annotations

import logging

from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from vae_anomaly.service.errors import INTERNAL_ERROR, error_body, error_parts
from vae_anomaly.service.routes import score_response
from vae_anomaly.service.state import ServiceState

logger = logging.getLogger(__name__)

JSON_HEADER = (b"content-type", b"application/json")


class ClientGone(Exception):
    """The client disconnected before its body arrived: nothing to answer."""


async def read_body(receive: Receive) -> bytes:
    """The whole request body (`Request.body()` without the `Request`)."""
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


class ScorePath:
    """ASGI middleware: `POST /score` here, everything else on to the app (see the module docstring)."""

    def __init__(self, app: ASGIApp, state: ServiceState, route: BaseRoute | None = None):
        self.app = app
        self.state = state
        self.route = route  # put in the scope, as the router would: metrics label requests by its path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != "/score" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        if self.route is not None:
            scope["route"] = self.route
        headers = None
        try:
            status, body = 200, await score_response(self.state, await read_body(receive))
        except ClientGone:
            return
        except Exception as exc:
            parts = error_parts(exc)
            if parts is None:
                logger.exception("unhandled error on %s %s", scope["method"], scope["path"])
                parts = (500, INTERNAL_ERROR, None)
            status, items, headers = parts
            body = error_body(items)
        raw = [JSON_HEADER, (b"content-length", str(len(body)).encode())]
        if headers:
            raw += [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers.items()]
        await send({"type": "http.response.start", "status": status, "headers": raw})
        await send({"type": "http.response.body", "body": body})
