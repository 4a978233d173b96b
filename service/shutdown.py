"""Stopping without losing requests: SIGTERM drains before uvicorn closes anything.

uvicorn's graceful shutdown closes every idle keep-alive connection at once. A client that had just
sent its next request on such a connection (wrk, any pooled HTTP client under load) gets a read
error instead of an answer: with `--workers 2`, a SIGHUP rolling restart (which SIGTERMs each old
worker) lost ~0.5 % of keep-alive requests. And a connection accepted in the same loop iteration as
the listening socket closed is never asked to shut down, so it is served keep-alive for as long as
its client keeps sending: SIGTERM then waited for clients to stop (10.6 s and 35.5 s in 2 of 8 runs).

`Drain` puts a phase in front of uvicorn's: on SIGTERM the process keeps serving for
`VAE_ANOMALY_DRAIN_SECONDS`, answering every response with `Connection: close` and `/readyz` with
503, so each client finishes its request in flight and reconnects elsewhere (another worker, or
the replacement); then uvicorn's own shutdown runs, bounded by `VAE_ANOMALY_GRACEFUL_SHUTDOWN_SECONDS`.
A second SIGTERM, or one before the model is loaded, skips the drain.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any, TypeVar

from starlette.types import ASGIApp, Message, Receive, Scope, Send

logger = logging.getLogger(__name__)

T = TypeVar("T")

Handler = Callable[[int, FrameType | None], Any]


class Drain:
    """The SIGTERM handler of one serving process (main thread only; see `install`)."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.draining = False
        self.ready = False  # set once the model serves; a SIGTERM before that stops at once
        self.stopped = asyncio.Event()  # set on a SIGTERM before `ready`: start-up gives up
        self._previous: Handler | int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._installed = False

    def install(self) -> bool:
        """Chain in front of the SIGTERM handler in place (uvicorn's). Only the main thread may own
        signal handlers: an app run elsewhere (a test client's portal thread) returns False."""
        if threading.current_thread() is not threading.main_thread():
            return False
        self._loop = asyncio.get_running_loop()
        self._previous = signal.getsignal(signal.SIGTERM)
        signal.signal(signal.SIGTERM, self._on_sigterm)
        self._installed = True
        return True

    def remove(self) -> None:
        if self._installed and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self._previous if self._previous is not None else signal.SIG_DFL)
            self._installed = False

    def _on_sigterm(self, signum: int, frame: FrameType | None) -> None:
        loop = self._loop
        assert loop is not None
        if not self.ready:
            loop.call_soon_threadsafe(self.stopped.set)
            self._pass_on(signum, frame)
        elif self.draining or self.seconds <= 0:
            self._pass_on(signum, frame)
        else:
            self.draining = True
            logger.info(
                "SIGTERM: draining for %.1f s (Connection: close on every response), then stopping", self.seconds
            )
            loop.call_soon_threadsafe(loop.call_later, self.seconds, self._pass_on, signum, frame)

    def _pass_on(self, signum: int, frame: FrameType | None) -> None:
        previous = self._previous
        if callable(previous):
            previous(signum, frame)
        elif previous == signal.SIG_DFL:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.raise_signal(signal.SIGTERM)

    def start_draining(self) -> None:
        """Drain without a signal (tests, or an operator endpoint later)."""
        self.draining = True


class ConnectionCloseMiddleware:
    """While draining, every response says `Connection: close`: the server closes the connection
    after it, and the client opens its next one elsewhere instead of losing a request on the wire."""

    def __init__(self, app: ASGIApp, drain: Drain):
        self.app = app
        self.drain = drain

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_closing(message: Message) -> None:
            if message["type"] == "http.response.start" and self.drain.draining:
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"connection"]
                message = {**message, "headers": [*headers, (b"connection", b"close")]}
            await send(message)

        await self.app(scope, receive, send_closing)


async def unless_stopped(function: Callable[[], T], stopped: asyncio.Event) -> T | None:
    """Run `function` in a daemon thread; None as soon as `stopped` is set, without waiting for it.

    Start-up loads the model this way: the event loop stays free to take SIGTERM, and a load that
    hangs (a slow network volume) cannot keep the interpreter from exiting, as a pool thread would."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(result: T | None, error: BaseException | None) -> None:
        if future.done():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)  # type: ignore[arg-type]

    def run() -> None:
        try:
            result = function()
        except BaseException as exc:  # handed to the awaiting coroutine, which re-raises it
            outcome: tuple[T | None, BaseException | None] = (None, exc)
        else:
            outcome = (result, None)
        # The loop may be gone by now (start-up was abandoned, a test client exited): nobody waits.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(settle, *outcome)

    threading.Thread(target=run, name="vae-anomaly-load", daemon=True).start()
    stop: asyncio.Future[Any] = asyncio.ensure_future(stopped.wait())
    waiting: set[asyncio.Future[Any]] = {future, stop}
    try:
        await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stop.cancel()
    if future.done():
        return future.result()
    return None
