"""The request head's deadline on each of uvicorn's HTTP implementations (h11 always,
httptools when installed), served in-process over real sockets: a connection is closed once
it has not sent a whole head within the timeout, from its opening or from its last answer;
a request whose head arrived in time is answered whatever its pace after that."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from bridge.http import head_deadline

TIMEOUT = 0.3
MARGIN = 1.0


def implementations() -> list[object]:
    found: list[object] = [pytest.param(head_deadline.h11_protocol, id="h11")]
    httptools = pytest.param(
        head_deadline.httptools_protocol,
        id="httptools",
        marks=pytest.mark.skipif(
            head_deadline.httptools_protocol(1.0) is None, reason="httptools not installed"
        ),
    )
    return [*found, httptools]


async def slow_echo(request: Request) -> PlainTextResponse:
    await asyncio.sleep(TIMEOUT * 2)  # longer than the head's deadline: it no longer counts
    return PlainTextResponse((await request.body()).decode())


@asynccontextmanager
async def serving(protocol: type[asyncio.Protocol]) -> AsyncIterator[int]:
    app = Starlette(routes=[Route("/", slow_echo, methods=["POST"])])
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    config = uvicorn.Config(app, http=protocol, lifespan="off", log_config=None)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[listener]))
    while not server.started:
        await asyncio.sleep(0.01)
    try:
        yield listener.getsockname()[1]
    finally:
        server.should_exit = True
        await task
        listener.close()


async def closed(reader: asyncio.StreamReader) -> tuple[bytes, float]:
    """What the server sent until it closed the connection, and when it did."""
    received = await asyncio.wait_for(reader.read(), 10)
    return received, time.monotonic()


@pytest.mark.parametrize("make", implementations())
async def test_a_head_that_does_not_arrive_in_time_is_cut(
    make: Callable[[float], type[asyncio.Protocol] | None],
) -> None:
    protocol = make(TIMEOUT)
    assert protocol is not None
    async with serving(protocol) as port:
        started = time.monotonic()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST / HTT")
        received, at = await closed(reader)
        writer.close()
    assert received == b""
    assert TIMEOUT - 0.05 <= at - started < TIMEOUT + MARGIN


@pytest.mark.parametrize("make", implementations())
async def test_after_an_answer_the_next_head_has_the_deadline_again_but_a_slow_app_not(
    make: Callable[[float], type[asyncio.Protocol] | None],
) -> None:
    protocol = make(TIMEOUT)
    assert protocol is not None
    async with serving(protocol) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nok")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        body = await asyncio.wait_for(reader.readexactly(2), 10)
        answered = time.monotonic()
        writer.write(b"POST")
        received, at = await closed(reader)
        writer.close()
    assert head.startswith(b"HTTP/1.1 200 ") and body == b"ok"  # after 2 x TIMEOUT in the app
    assert received == b""
    assert TIMEOUT - 0.05 <= at - answered < TIMEOUT + MARGIN
