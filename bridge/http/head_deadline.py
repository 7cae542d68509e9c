"""uvicorn's HTTP protocols with a deadline on each request's head.

A connection has `header_timeout` seconds to deliver a request's whole head (request line and
headers): from when it opens, and again from each response while it waits for the next
request. Past that it is closed, so a client that sends half a request line holds no
connection for long (uvicorn has no such timeout of its own). Once a head is in, the body has
its own deadline (`edge.BodyReader`).
"""

from __future__ import annotations

import asyncio

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol


class HeadDeadline:
    """One connection's timer: armed while a head is awaited; when it runs out, the
    connection is closed."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._timer: asyncio.TimerHandle | None = None

    def arm(self, loop: asyncio.AbstractEventLoop, transport: asyncio.BaseTransport) -> None:
        self.cancel()
        if not transport.is_closing():
            # Nothing is answered: there is no request to answer yet.
            self._timer = loop.call_later(self.timeout, transport.close)

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


def protocol(header_timeout: float, parser: str = "httptools") -> type[asyncio.Protocol]:
    """The HTTP protocol class to give uvicorn (`http=`) for `parser` (`httptools` or `h11`,
    as `runtime.choose` picked; h11's when httptools is not installed): either closes a
    connection whose request head takes longer than `header_timeout` seconds."""
    compiled = httptools_protocol(header_timeout) if parser == "httptools" else None
    return compiled or h11_protocol(header_timeout)


def h11_protocol(header_timeout: float) -> type[asyncio.Protocol]:
    """uvicorn's h11 protocol with a `HeadDeadline` of `header_timeout` seconds."""

    class H11HeadDeadline(H11Protocol):
        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            self.head_deadline = HeadDeadline(header_timeout)
            super().connection_made(transport)
            self.head_deadline.arm(self.loop, transport)

        def handle_events(self) -> None:
            super().handle_events()
            if self.conn.their_state is not h11.IDLE:  # a head is in, or the connection over
                self.head_deadline.cancel()

        def on_response_complete(self) -> None:
            super().on_response_complete()  # may start a pipelined request, its head in
            if self.conn.their_state is h11.IDLE:
                self.head_deadline.arm(self.loop, self.transport)

        def connection_lost(self, exc: Exception | None) -> None:
            self.head_deadline.cancel()
            super().connection_lost(exc)

    return H11HeadDeadline


def httptools_protocol(header_timeout: float) -> type[asyncio.Protocol] | None:
    """uvicorn's httptools protocol with a `HeadDeadline` of `header_timeout` seconds; None
    when httptools is not installed."""
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    except ImportError:
        return None

    class HttpToolsHeadDeadline(HttpToolsProtocol):
        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            self.head_deadline = HeadDeadline(header_timeout)
            super().connection_made(transport)
            self.head_deadline.arm(self.loop, transport)

        def on_headers_complete(self) -> None:
            self.head_deadline.cancel()
            super().on_headers_complete()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.pipeline:  # else the next request, its head in already, has started
                self.head_deadline.arm(self.loop, self.transport)

        def connection_lost(self, exc: Exception | None) -> None:
            self.head_deadline.cancel()
            super().connection_lost(exc)

    return HttpToolsHeadDeadline
