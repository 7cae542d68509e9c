"""A fake Slack Socket Mode server: the WebSocket end of `apps.connections.open`.

    with FakeSocketMode() as socket_mode:
        slack.socket_mode = socket_mode        # the fake Web API now answers apps.connections.open
        ... the bridge connects with SLACK_APP_TOKEN=xapp-test ...
        envelope_id = socket_mode.send_event(event_callback)
        socket_mode.wait_for(lambda: envelope_id in socket_mode.acks())

Each connection gets `{"type": "hello"}` first. `send_event` wraps an Events API
`event_callback` in an `events_api` envelope with a fresh `envelope_id` and sends it over the
newest open connection; acknowledgements (`{"envelope_id": …}`) are recorded. `disconnect`
sends Slack's `{"type": "disconnect", "reason": …}` and leaves the closing to the client;
`drop` cuts the connection without a close frame, as a network failure would; `refuse`
makes handshakes fail. A URL is good for one try, as Slack's are.

It runs aiohttp's server in a thread with its own event loop, so it serves async tests (whose
loop it never touches) and child processes alike; every method is safe from any thread.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

from aiohttp import WSMsgType, web

_TIMEOUT = 10.0  # seconds a test waits for the server's own loop


@dataclass
class _Connection:
    ws: web.WebSocketResponse
    request: web.Request
    greeted: asyncio.Event = field(default_factory=asyncio.Event)


class FakeSocketMode:
    """Socket Mode's WebSocket server on 127.0.0.1:<ephemeral port>."""

    def __init__(self) -> None:
        self._lock = threading.Condition()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._port: int | None = None
        self._ids = itertools.count(1)
        self._issued: set[str] = set()  # tickets of URLs handed out and not yet used
        self._open: list[_Connection] = []
        self._opened = 0
        self._acks: list[str] = []
        self._sent: list[dict[str, Any]] = []
        self._refusing = False

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> Self:
        started = threading.Event()
        self._thread = threading.Thread(
            target=lambda: asyncio.run(self._serve(started)), name="fake-socket-mode", daemon=True
        )
        self._thread.start()
        if not started.wait(_TIMEOUT):
            raise RuntimeError("fake Socket Mode server failed to start")
        return self

    def stop(self) -> None:
        thread, self._thread = self._thread, None
        if thread is None or self._loop is None or self._stop is None:
            return
        self._loop.call_soon_threadsafe(self._stop.set)
        thread.join(_TIMEOUT)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    async def _serve(self, started: threading.Event) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        app = web.Application()
        app.router.add_get("/link/", self._link)
        runner = web.AppRunner(app, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        server = site._server  # aiohttp keeps the listening sockets here
        assert isinstance(server, asyncio.Server)
        self._port = int(server.sockets[0].getsockname()[1])
        started.set()
        await self._stop.wait()
        for connection in list(self._open):
            await connection.ws.close()
        await runner.cleanup()

    # -- what apps.connections.open hands out ----------------------------------------------

    def new_url(self) -> str:
        """A fresh `ws://` URL for one connection (what `apps.connections.open` returns)."""
        if self._port is None:
            raise RuntimeError("fake Socket Mode server not started")
        ticket = f"t{next(self._ids)}"
        with self._lock:
            self._issued.add(ticket)
        return f"ws://127.0.0.1:{self._port}/link/?ticket={ticket}"

    async def _link(self, request: web.Request) -> web.StreamResponse:
        ticket = request.query.get("ticket", "")
        with self._lock:
            if ticket not in self._issued:
                return web.Response(status=401, text="unknown or used ticket")
            self._issued.discard(ticket)
            if self._refusing:
                return web.Response(status=503, text="try again later")
        ws = web.WebSocketResponse(autoping=True)
        connection = _Connection(ws, request)
        # Counted open before the handshake's 101 goes out: a client that sees itself connected
        # (in another thread) must never find the server not counting it yet.
        with self._lock:
            self._open.append(connection)
            self._opened += 1
            count = len(self._open)
            self._lock.notify_all()
        try:
            await ws.prepare(request)
            await ws.send_json(
                {
                    "type": "hello",
                    "num_connections": count,
                    "debug_info": {
                        "host": "fake-socket-mode",
                        "approximate_connection_time": 18060,
                    },
                    "connection_info": {"app_id": "A0FAKE"},
                }
            )
            connection.greeted.set()
            async for message in ws:
                if message.type == WSMsgType.TEXT:
                    self._record(message.data)
        finally:
            with self._lock:
                self._open = [c for c in self._open if c is not connection]
                self._lock.notify_all()
        return ws

    def _record(self, text: str) -> None:
        try:
            answer = json.loads(text)
        except ValueError:
            return
        if isinstance(answer, dict) and isinstance(answer.get("envelope_id"), str):
            with self._lock:
                self._acks.append(answer["envelope_id"])
                self._lock.notify_all()

    # -- what a test does ------------------------------------------------------------------

    def send_event(self, event_callback: dict[str, Any], *, retry_attempt: int = 0) -> str:
        """Send an `events_api` envelope over the newest open connection; its envelope_id."""
        envelope_id = f"env-{next(self._ids)}"
        envelope = {
            "envelope_id": envelope_id,
            "type": "events_api",
            "payload": event_callback,
            "accepts_response_payload": False,
            "retry_attempt": retry_attempt,
            "retry_reason": "timeout" if retry_attempt else "",
        }
        self._on_newest(lambda ws: ws.send_json(envelope))
        with self._lock:
            self._sent.append(envelope)
        return envelope_id

    def disconnect(self, reason: str = "refresh_requested") -> None:
        """Ask the client on the newest connection to reconnect, as Slack does before it
        closes a connection; the client then opens another and closes this one."""
        message = {"type": "disconnect", "reason": reason, "debug_info": {"host": "fake"}}
        self._on_newest(lambda ws: ws.send_json(message))

    def drop(self) -> None:
        """Cut the newest connection without a close frame (a network failure)."""

        async def cut() -> None:
            connection = await self._newest()
            transport = connection.request.transport
            if transport is not None:
                transport.abort()

        self._run(cut())

    def refuse(self, refusing: bool = True) -> None:
        """Answer every WebSocket handshake 503 (the URL is used up all the same)."""
        with self._lock:
            self._refusing = refusing

    def _on_newest(self, send: Callable[[web.WebSocketResponse], Any]) -> None:
        async def on_newest() -> None:
            await send((await self._newest()).ws)

        self._run(on_newest())

    async def _newest(self) -> _Connection:
        """The newest open connection, once its hello is sent (nothing may come before it)."""
        with self._lock:
            if not self._open:
                raise RuntimeError("no Socket Mode connection is open")
            connection = self._open[-1]
        await connection.greeted.wait()
        return connection

    def _run(self, coroutine: Any) -> None:
        if self._loop is None:
            raise RuntimeError("fake Socket Mode server not started")
        asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(_TIMEOUT)

    # -- what a test reads -----------------------------------------------------------------

    def open_connections(self) -> int:
        with self._lock:
            return len(self._open)

    def connections_opened(self) -> int:
        """Connections ever opened (reconnections included)."""
        with self._lock:
            return self._opened

    def acks(self) -> list[str]:
        """Envelope ids acknowledged, in arrival order."""
        with self._lock:
            return list(self._acks)

    def sent(self) -> list[dict[str, Any]]:
        """Envelopes sent, in order."""
        with self._lock:
            return list(self._sent)

    def wait_for(self, condition: Callable[[], bool], timeout: float = _TIMEOUT) -> None:
        """Block until `condition` holds (for tests driving a subprocess); it is checked
        whenever a connection opens or closes or an acknowledgement arrives."""
        with self._lock:
            if not self._lock.wait_for(condition, timeout):
                raise TimeoutError(f"not within {timeout}s")
