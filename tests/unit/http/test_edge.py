"""The edge's pure parts: the body reader's deadlines and limits, fed by a scripted
receive, headers and JSON errors."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import pytest
from starlette.responses import JSONResponse
from starlette.types import Message, Scope

from bridge.http.edge import RETRY_AFTER, BodyReader, error, header

MARGIN = 1.5  # scheduling slack on a busy 2-core machine


async def test_reads_past_their_deadline_get_408_and_others_go_on_from_one_sweep() -> None:
    reader = BodyReader(timeout=0.4)
    stalled: asyncio.Future[Message] = asyncio.get_running_loop().create_future()

    async def never() -> Message:
        return await stalled

    async def prompt() -> Message:
        return {"type": "http.request", "body": b"[]", "more_body": False}

    started = time.monotonic()
    slow = asyncio.create_task(reader.read(never, None))
    await asyncio.sleep(0.2)
    assert await reader.read(prompt, "2") == b"[]"  # while the slow one waits
    late = await slow
    assert isinstance(late, JSONResponse) and late.status_code == 408
    assert late.headers["connection"] == "close"
    assert 0.4 <= time.monotonic() - started < 0.4 + 0.4 / 8 + MARGIN
    assert not slow.cancelled()


async def test_a_read_cancelled_from_elsewhere_stays_cancelled_not_408() -> None:
    reader = BodyReader(timeout=5.0)

    async def never() -> Message:
        await asyncio.sleep(3600)
        raise AssertionError("unreachable")

    read = asyncio.create_task(reader.read(never, None))
    await asyncio.sleep(0.01)
    read.cancel()  # the server giving up on the request
    with pytest.raises(asyncio.CancelledError):
        await read


async def test_a_declared_or_sent_body_over_the_limit_is_413() -> None:
    reader = BodyReader(timeout=5.0, limit=10)

    async def chunks() -> Message:
        return {"type": "http.request", "body": b"x" * 6, "more_body": True}

    declared = await reader.read(chunks, "11")
    sent = await reader.read(chunks, None)
    for answer in (declared, sent):
        assert isinstance(answer, JSONResponse) and answer.status_code == 413


def messages(*parts: Message) -> Callable[[], Awaitable[Message]]:
    """An ASGI `receive` that hands out `parts` in order, then fails the test."""
    queue = list(parts)

    async def receive() -> Message:
        assert queue, "read past the end of the body"
        return queue.pop(0)

    return receive


async def test_a_body_sent_in_chunks_is_read_whole_up_to_the_limit_exactly() -> None:
    reader = BodyReader(timeout=5.0, limit=10)
    body = await reader.read(
        messages(
            {"type": "http.request", "body": b"[1,", "more_body": True},
            {"type": "http.request", "body": b"2,345]", "more_body": True},
            {"type": "http.request", "body": b"x", "more_body": False},
        ),
        "10",
    )
    assert body == b"[1,2,345]x"


async def test_a_declared_length_over_the_limit_is_413_before_anything_is_read() -> None:
    reader = BodyReader(timeout=5.0, limit=10)
    answer = await reader.read(messages(), "11")  # reading a part would fail the test
    assert isinstance(answer, JSONResponse) and answer.status_code == 413
    assert answer.headers["connection"] == "close"


async def test_a_declared_length_that_is_no_number_is_left_to_the_bytes_sent() -> None:
    reader = BodyReader(timeout=5.0, limit=10)
    body = await reader.read(messages({"type": "http.request", "body": b"[]"}), "ten")
    assert body == b"[]"


async def test_a_client_gone_before_the_end_of_its_body_is_400() -> None:
    reader = BodyReader(timeout=5.0)
    answer = await reader.read(
        messages(
            {"type": "http.request", "body": b"[", "more_body": True},
            {"type": "http.disconnect"},
        ),
        None,
    )
    assert isinstance(answer, JSONResponse) and answer.status_code == 400


def test_a_header_is_read_by_its_lower_case_name_and_the_first_one_wins() -> None:
    scope: Scope = {
        "type": "http",
        "headers": [(b"content-length", b"12"), (b"x-sig", b"a"), (b"x-sig", b"b")],
    }
    assert header(scope, b"content-length") == "12"
    assert header(scope, b"x-sig") == "a"
    assert header(scope, b"x-missing") is None


def test_an_error_says_when_to_retry_and_whether_the_connection_can_go_on() -> None:
    plain = error(400, "bad")
    assert plain.status_code == 400 and plain.body == b'{"error":"bad"}'
    assert "retry-after" not in plain.headers and "connection" not in plain.headers
    busy = error(503, "busy", retry=True)
    assert busy.headers["retry-after"] == RETRY_AFTER
    cut = error(408, "late", close=True)
    assert cut.headers["connection"] == "close"
