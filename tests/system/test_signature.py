"""The optional webhook signature: with SMSTOOLS_WEBHOOK_SECRET set, only signed, fresh bodies
are stored; without it the secret URL token alone protects the endpoint."""

from __future__ import annotations

import io
import json

import httpx
from sqlalchemy import func, select

from bridge.chat.console import ConsoleAdapter
from bridge.config import load
from bridge.http import signature
from bridge.settings import normalise_database_url
from bridge.store.db import Database
from bridge.store.schema import webhook_requests
from tests.conftest import sample
from tests.support.harness import TOKEN, Clock, RunningBridge, running_bridge

SECRET = "whsec-test-0123456789abcdef"
CONFIG = load(None, {})
URL = f"/webhooks/smstools/{TOKEN}"
NOW = 1_800_000_000


def console() -> dict[str, ConsoleAdapter]:
    return {"console": ConsoleAdapter("console", io.StringIO())}


def signed_headers(body: bytes, timestamp: int = NOW, secret: str = SECRET) -> dict[str, str]:
    return {
        "X-Smstools-Timestamp": str(timestamp),
        "X-Smstools-Signature": signature.sign(secret.encode(), timestamp, body),
    }


async def post(bridge: RunningBridge, body: bytes, headers: dict[str, str]) -> httpx.Response:
    return await bridge.client.post(URL, content=body, headers=headers)


async def stored_bodies(database_url: str) -> int:
    database = Database(normalise_database_url(database_url))
    try:
        async with database.transaction() as connection:
            query = select(func.count()).select_from(webhook_requests)
            return int((await connection.execute(query)).scalar_one())
    finally:
        await database.close()


async def test_with_a_secret_a_signed_body_is_stored(sqlite_url: str) -> None:
    clock = Clock()
    body = json.dumps(sample("inbox_message")).encode()
    env = {"SMSTOOLS_WEBHOOK_SECRET": SECRET}
    async with running_bridge(
        sqlite_url, CONFIG, console(), run_worker=False, now=clock, env=env
    ) as bridge:
        response = await post(bridge, body, signed_headers(body, int(clock())))
    assert response.status_code == 200 and response.json() == {"received": 1}
    assert await stored_bodies(sqlite_url) == 1


async def test_with_a_secret_unsigned_forged_and_replayed_bodies_get_401(sqlite_url: str) -> None:
    clock = Clock()
    body = json.dumps(sample("inbox_message")).encode()
    now = int(clock())
    env = {"SMSTOOLS_WEBHOOK_SECRET": SECRET}
    async with running_bridge(
        sqlite_url, CONFIG, console(), run_worker=False, now=clock, env=env
    ) as bridge:
        refused = [
            await post(bridge, body, {}),
            await post(bridge, body, signed_headers(body, now, secret="not-the-secret")),
            await post(bridge, body + b" ", signed_headers(body, now)),
            await post(bridge, body, signed_headers(body, now - 301)),
            await post(bridge, body, signed_headers(body, now + 301)),
        ]
        late = signed_headers(body, now)
        clock.advance(301)  # a captured request replayed five minutes later
        refused.append(await post(bridge, body, late))
    assert [r.status_code for r in refused] == [401] * 6
    assert all(r.json() == {"error": "signature check failed"} for r in refused)
    assert await stored_bodies(sqlite_url) == 0


async def test_with_a_secret_the_url_token_is_still_checked_first(sqlite_url: str) -> None:
    body = json.dumps(sample("inbox_message")).encode()
    env = {"SMSTOOLS_WEBHOOK_SECRET": SECRET}
    async with running_bridge(
        sqlite_url, CONFIG, console(), run_worker=False, now=Clock(), env=env
    ) as bridge:
        response = await bridge.client.post(
            "/webhooks/smstools/wrong", content=body, headers=signed_headers(body)
        )
    assert response.status_code == 404
    assert await stored_bodies(sqlite_url) == 0


async def test_without_a_secret_signature_headers_are_not_needed(sqlite_url: str) -> None:
    body = json.dumps(sample("inbox_message")).encode()
    async with running_bridge(sqlite_url, CONFIG, console(), run_worker=False) as bridge:
        response = await post(bridge, body, {"X-Smstools-Signature": "t=1,v1=garbage"})
    assert response.status_code == 200
