"""The HTTP protocol `serve` runs: uvicorn's, with a deadline on reading a request's headers.

uvicorn bounds the idle time between requests (`timeout_keep_alive`) but not the time a client
takes to send a request's headers: a fresh connection that sends nothing, or a few header bytes at
a time (slowloris), holds a connection slot and a file descriptor for as long as it likes. Here
every connection must finish its next request's headers within `VAE_ANOMALY_READ_TIMEOUT_SECONDS`
of connecting or of its previous response, or it gets a 408 and is closed. The body has the same
deadline, enforced where the body is read (service/limits.py).
"""

from __future__ import annotations

import asyncio
import importlib.util
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

from vae_anomaly.service.errors import error_body
from vae_anomaly.service.settings import get_settings


def _timeout_response(seconds: float) -> bytes:
    msg = f"request headers not received within {seconds:g} s (VAE_ANOMALY_READ_TIMEOUT_SECONDS)"
    body = error_body([{"loc": ["headers"], "msg": msg, "type": "read_timeout"}])
    head = (
        "HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode() + body


class ReadTimeout:
    """The header deadline, mixed into one of uvicorn's HTTP protocols (h11 or httptools): both keep
    the request in flight as `self.cycle` and call `on_response_complete` after each response."""

    transport: asyncio.Transport
    loop: asyncio.AbstractEventLoop
    cycle: Any

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.read_timeout_seconds = get_settings().read_timeout_seconds
        self._read_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)  # type: ignore[misc]
        self._arm_read_deadline()

    def on_response_complete(self) -> None:
        super().on_response_complete()  # type: ignore[misc]
        self._arm_read_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_read_deadline()
        super().connection_lost(exc)  # type: ignore[misc]

    def _arm_read_deadline(self) -> None:
        self._disarm_read_deadline()
        if not self.transport.is_closing():
            self._read_deadline = self.loop.call_later(
                self.read_timeout_seconds, self._read_deadline_passed, self.cycle
            )

    def _disarm_read_deadline(self) -> None:
        if self._read_deadline is not None:
            self._read_deadline.cancel()
            self._read_deadline = None

    def _read_deadline_passed(self, cycle: Any) -> None:
        """No request began since the deadline was armed (the cycle is the same, finished one)."""
        self._read_deadline = None
        if self.transport.is_closing() or self.cycle is not cycle:
            return
        if cycle is not None and not cycle.response_complete:
            return
        self.transport.write(_timeout_response(self.read_timeout_seconds))
        self.transport.close()


class H11ReadTimeoutProtocol(ReadTimeout, H11Protocol):  # type: ignore[misc]
    """uvicorn's pure-Python HTTP/1.1 parser (h11) with the header deadline."""


PROTOCOLS = {
    "h11": "vae_anomaly.service.protocol:H11ReadTimeoutProtocol",
    "httptools": "vae_anomaly.service.protocol:HttpToolsReadTimeoutProtocol",
}
"""uvicorn's `http` argument by parser, as import strings: the workers of `--workers N` import them."""


def httptools_available() -> bool:
    """Whether httptools (uvicorn's C parser, part of `uvicorn[standard]`) is installed."""
    return importlib.util.find_spec("httptools") is not None


if httptools_available():
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    class HttpToolsReadTimeoutProtocol(ReadTimeout, HttpToolsProtocol):  # type: ignore[misc]
        """uvicorn's C parser (httptools) with the header deadline."""
