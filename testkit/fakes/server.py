"""Run an ASGI app under uvicorn on 127.0.0.1:<ephemeral port> in a background thread.

The server has its own event loop, so it serves sync tests, async tests (whose loop it never
touches) and child processes alike.
"""

from __future__ import annotations

import asyncio
import threading
import time
from types import TracebackType
from typing import Self

import uvicorn
from starlette.types import ASGIApp, Receive, Scope, Send


class FakeServer:
    """A uvicorn server in a thread: `start()`, `.url`, `stop()`; or `with FakeServer(app):`."""

    def __init__(self, app: ASGIApp, *, startup_timeout: float = 10.0) -> None:
        self._app = app
        self._answering = 0  # requests being answered right now
        self._answered = threading.Condition()
        self._config = uvicorn.Config(
            self._counting,
            interface="asgi3",  # a bound method: uvicorn cannot tell by looking
            host="127.0.0.1",
            port=0,  # the OS picks a free port; read back after startup
            loop="asyncio",
            http="h11",
            lifespan="off",
            log_config=None,  # leave the test process's logging configuration alone
            log_level="warning",
            access_log=False,
            # A request still sleeping in a "slow" fake must not hold up the test run.
            timeout_graceful_shutdown=2,
        )
        self._server = uvicorn.Server(self._config)
        self._thread: threading.Thread | None = None
        self._startup_timeout = startup_timeout
        self._port: int | None = None

    @property
    def url(self) -> str:
        """Base URL without a trailing slash, e.g. ``http://127.0.0.1:54321``."""
        if self._port is None:
            raise RuntimeError("server not started")
        return f"http://127.0.0.1:{self._port}"

    async def _counting(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The app, counting the requests it is answering (see `wait_idle`)."""
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        with self._answered:
            self._answering += 1
            self._answered.notify_all()
        try:
            await self._app(scope, receive, send)
        finally:
            with self._answered:
                self._answering -= 1
                self._answered.notify_all()

    def wait_idle(self, timeout: float = 10.0) -> None:
        """Block until no request is being answered: posts in flight have landed (or not)."""
        with self._answered:
            if not self._answered.wait_for(lambda: self._answering == 0, timeout):
                unanswered = self._answering
                raise TimeoutError(f"{unanswered} request(s) still unanswered after {timeout}s")

    def wait_busy(self, count: int, timeout: float = 10.0) -> None:
        """Block until at least `count` requests are being answered at once (in flight)."""
        with self._answered:
            if not self._answered.wait_for(lambda: self._answering >= count, timeout):
                raise TimeoutError(f"never {count} requests in flight within {timeout}s")

    def start(self) -> FakeServer:
        """Start serving; returns once the socket is listening."""
        if self._thread is not None:
            raise RuntimeError("server already started")
        self._thread = threading.Thread(
            target=lambda: asyncio.run(self._server.serve()),
            name="fake-server",
            daemon=True,
        )
        self._thread.start()
        deadline = time.monotonic() + self._startup_timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("fake server failed to start")
            time.sleep(0.01)
        sockets = self._server.servers[0].sockets
        self._port = int(sockets[0].getsockname()[1])
        return self

    def stop(self) -> None:
        """Stop accepting, finish (or after 2 s cancel) running requests, join the thread."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._server.should_exit = True
        thread.join(timeout=10)
        if thread.is_alive():
            raise RuntimeError("fake server did not stop")

    def __enter__(self) -> FakeServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class FakePlatform:
    """What every platform fake shares: a `FakeServer` running its Starlette app, and its
    lifecycle. A subclass sets `_server` and `_closing` (set on stop, so "slow" requests wake
    and shutdown is quick) in its constructor."""

    _server: FakeServer
    _closing: threading.Event

    @property
    def url(self) -> str:
        """Server root, e.g. ``http://127.0.0.1:5555``."""
        return self._server.url

    def start(self) -> Self:
        self._server.start()
        return self

    def stop(self) -> None:
        self._closing.set()
        self._server.stop()

    def wait_idle(self, timeout: float = 10.0) -> None:
        """Block until no request is being answered (e.g. those a killed process left)."""
        self._server.wait_idle(timeout)

    def wait_busy(self, count: int, timeout: float = 10.0) -> None:
        """Block until at least `count` requests are in flight (e.g. to kill a process then)."""
        self._server.wait_busy(count, timeout)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
