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
from typing import Any

from uvicorn.protocols.http.auto import AutoHTTPProtocol

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


class ReadTimeoutProtocol(AutoHTTPProtocol):  # type: ignore[misc, valid-type]
    """uvicorn's HTTP protocol (h11 or httptools, whichever is installed) with a header deadline."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.read_timeout_seconds = get_settings().read_timeout_seconds
        self._read_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_read_deadline()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._arm_read_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_read_deadline()
        super().connection_lost(exc)

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
