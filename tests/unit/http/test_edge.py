"""The edge's body reader: deadlines and limits, fed by a fake receive."""

from __future__ import annotations

import asyncio
import time

import pytest
from starlette.responses import JSONResponse
from starlette.types import Message

from bridge.http.edge import BodyReader

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
