"""The edge for agents' messages holds up like the Smstools one: a Slack event or Telegram
update the database cannot store gets 503 with Retry-After (and one log line), a body that
trickles in gets 408 and its connection closed, and a refusal before the body closes it too."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest
from pydantic import SecretStr
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bridge.config import load
from bridge.http.chat_events import SlackEvents, TelegramUpdates
from bridge.http.edge import BodyReader
from bridge.store.db import Database
from testkit.processes import free_port
from tests.support.reply_fixtures import SIGNING_SECRET, TELEGRAM_SECRET, sign, slack_event

CONFIG = load(None, {})
BODY_TIMEOUT = 0.3


@asynccontextmanager
async def chat_edge(database: Database) -> AsyncIterator[httpx.AsyncClient]:
    """The two chat edges alone, on a database that may not work (no start-up migration)."""
    bodies = BodyReader(BODY_TIMEOUT)  # one for both edges, as the app has
    slack = SlackEvents(
        database, CONFIG, SecretStr(SIGNING_SECRET), time.time, lambda: None, bodies
    )
    telegram = TelegramUpdates(
        database, CONFIG, SecretStr(TELEGRAM_SECRET), time.time, lambda: None, bodies
    )

    async def slack_events(request: Request) -> Response:
        return await slack(request)

    async def telegram_updates(request: Request) -> Response:
        return await telegram(request)

    app = Starlette(
        routes=[
            Route("/slack/events", slack_events, methods=["POST"]),
            Route("/telegram/webhook", telegram_updates, methods=["POST"]),
        ]
    )
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://bridge") as client:
            yield client
    finally:
        await database.close()


def unreachable() -> Database:
    return Database(f"postgresql+asyncpg://bridge@127.0.0.1:{free_port()}/bridge", timeout=2)


async def test_a_slack_event_the_database_cannot_store_is_503_with_retry_after(
    caplog: pytest.LogCaptureFixture,
) -> None:
    body = json.dumps(slack_event("Your parcel ships today", "1.0", "2.0")).encode()
    async with chat_edge(unreachable()) as client:
        response = await client.post(
            "/slack/events", content=body, headers=sign(body, int(time.time()))
        )
    assert response.status_code == 503 and response.headers["retry-after"] == "5"
    assert "send it again" in response.json()["error"]
    (record,) = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert record.exc_info is None and "ConnectionRefusedError" in record.getMessage()
    assert "parcel" not in record.getMessage()


async def test_a_telegram_update_that_trickles_in_gets_408_and_the_connection_closed() -> None:
    async def trickle() -> AsyncIterator[bytes]:
        yield b'{"update_id": 1,'
        await asyncio.sleep(BODY_TIMEOUT * 5)
        yield b' "message": {}}'

    headers = {"X-Telegram-Bot-Api-Secret-Token": TELEGRAM_SECRET}
    async with chat_edge(unreachable()) as client:
        started = time.monotonic()
        response = await client.post("/telegram/webhook", content=trickle(), headers=headers)
        waited = time.monotonic() - started
    assert response.status_code == 408 and response.headers["connection"] == "close"
    assert BODY_TIMEOUT <= waited < BODY_TIMEOUT * 5


async def test_a_refusal_before_the_body_closes_the_connection() -> None:
    async with chat_edge(unreachable()) as client:
        wrong = await client.post(
            "/telegram/webhook",
            json={"update_id": 1},
            headers={"X-Telegram-Bot-Api-Secret-Token": "x"},
        )
        huge = await client.post(
            "/slack/events",
            content=b"{}",
            headers={"Content-Length": str(2 * 1024 * 1024)},
        )
    assert wrong.status_code == 403 and wrong.headers["connection"] == "close"
    assert huge.status_code == 413 and huge.headers["connection"] == "close"
