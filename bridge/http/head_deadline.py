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


class HeadDeadlines:
    """Every connection of a server that awaits a request head, and by when: a sweep every
    eighth of `timeout` closes those past it (so within `timeout * 9 / 8`), and stops while
    none waits. Arming and cancelling are a dict's store and pop: a timer per request (armed
    at each answer, cancelled at each head) cost about 1.6 µs of the event loop's time a
    request, for a deadline that almost never runs out."""

    def __init__(self, timeout: float) -> None:
        self.timeout, self.tick = timeout, timeout / 8
        self._awaiting: dict[asyncio.BaseTransport, float] = {}  # transport: deadline
        self._sweep: asyncio.TimerHandle | None = None

    def arm(self, loop: asyncio.AbstractEventLoop, transport: asyncio.BaseTransport) -> None:
        if not transport.is_closing():
            # Nothing is answered: there is no request to answer yet.
            self._awaiting[transport] = loop.time() + self.timeout
            if self._sweep is None:
                self._sweep = loop.call_later(self.tick, self._close_overdue, loop)

    def cancel(self, transport: asyncio.BaseTransport) -> None:
        self._awaiting.pop(transport, None)

    def _close_overdue(self, loop: asyncio.AbstractEventLoop) -> None:
        now = loop.time()
        overdue = [transport for transport, at in self._awaiting.items() if at <= now]
        for transport in overdue:
            del self._awaiting[transport]
            transport.close()
        self._sweep = (
            loop.call_later(self.tick, self._close_overdue, loop) if self._awaiting else None
        )


def protocol(header_timeout: float, parser: str = "httptools") -> type[asyncio.Protocol]:
    """The HTTP protocol class to give uvicorn (`http=`) for `parser` (`httptools` or `h11`,
    as `runtime.choose` picked; h11's when httptools is not installed): either closes a
    connection whose request head takes longer than `header_timeout` seconds."""
    compiled = httptools_protocol(header_timeout) if parser == "httptools" else None
    return compiled or h11_protocol(header_timeout)


def h11_protocol(header_timeout: float) -> type[asyncio.Protocol]:
    """uvicorn's h11 protocol; its connections share one `HeadDeadlines` of
    `header_timeout` seconds."""

    deadlines = HeadDeadlines(header_timeout)

    class H11HeadDeadline(H11Protocol):
        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            deadlines.arm(self.loop, transport)

        def handle_events(self) -> None:
            super().handle_events()
            if self.conn.their_state is not h11.IDLE:  # a head is in, or the connection over
                deadlines.cancel(self.transport)

        def on_response_complete(self) -> None:
            super().on_response_complete()  # may start a pipelined request, its head in
            if self.conn.their_state is h11.IDLE:
                deadlines.arm(self.loop, self.transport)

        def connection_lost(self, exc: Exception | None) -> None:
            deadlines.cancel(self.transport)
            super().connection_lost(exc)

    return H11HeadDeadline


def httptools_protocol(header_timeout: float) -> type[asyncio.Protocol] | None:
    """uvicorn's httptools protocol; its connections share one `HeadDeadlines` of
    `header_timeout` seconds. None when httptools is not installed."""
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    except ImportError:
        return None

    deadlines = HeadDeadlines(header_timeout)

    class HttpToolsHeadDeadline(HttpToolsProtocol):
        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            deadlines.arm(self.loop, transport)

        def on_headers_complete(self) -> None:
            deadlines.cancel(self.transport)
            super().on_headers_complete()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.pipeline:  # else the next request, its head in already, has started
                deadlines.arm(self.loop, self.transport)

        def connection_lost(self, exc: Exception | None) -> None:
            deadlines.cancel(self.transport)
            super().connection_lost(exc)

    return HttpToolsHeadDeadline
