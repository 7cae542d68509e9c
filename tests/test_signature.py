"""The optional webhook signature: with SMSTOOLS_WEBHOOK_SECRET set, only signed, fresh bodies
are stored; without it the secret URL token alone protects the endpoint."""

from __future__ import annotations

import io
import json

import httpx
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from bridge.chat.console import ConsoleAdapter
from bridge.config import load
from bridge.http import signature
from bridge.settings import normalise_database_url
from bridge.store.db import Database
from bridge.store.schema import webhook_requests
from tests.conftest import sample
from tests.harness import TOKEN, Clock, RunningBridge, running_bridge

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


@settings(max_examples=100, deadline=None)
@given(body=st.binary(max_size=2000), skew=st.integers(-300, 300))
def test_a_body_signed_with_the_secret_within_five_minutes_is_accepted(
    body: bytes, skew: int
) -> None:
    headers = signed_headers(body, NOW + skew)
    assert (
        signature.problem(
            SECRET.encode(),
            body,
            headers["X-Smstools-Timestamp"],
            headers["X-Smstools-Signature"],
            NOW,
        )
        is None
    )


@settings(max_examples=100, deadline=None)
@given(body=st.binary(min_size=1, max_size=2000), data=st.data())
def test_any_change_to_the_signed_body_is_refused(body: bytes, data: st.DataObject) -> None:
    index = data.draw(st.integers(0, len(body) - 1))
    flip = data.draw(st.integers(1, 255))
    tampered = body[:index] + bytes([body[index] ^ flip]) + body[index + 1 :]
    headers = signed_headers(body)
    refused = signature.problem(
        SECRET.encode(),
        tampered,
        headers["X-Smstools-Timestamp"],
        headers["X-Smstools-Signature"],
        NOW,
    )
    assert refused == "signature does not match"


def test_a_rotated_secret_may_send_several_v1_values() -> None:
    body = b"[]"
    old = signature.sign(b"old-secret", NOW, body).split(",")[1]
    header = f"{signature.sign(SECRET.encode(), NOW, body)},{old}"
    assert signature.problem(SECRET.encode(), body, str(NOW), header, NOW) is None
    assert signature.problem(b"old-secret", body, str(NOW), header, NOW) is None


def test_malformed_signature_headers_are_refused_with_a_reason() -> None:
    body = b"[]"
    good = signature.sign(SECRET.encode(), NOW, body)
    cases = {
        (None, good): "missing",
        (str(NOW), None): "missing",
        ("", good): "missing",
        ("soon", good): "not a number",
        ("1" * 40, good): "not a number",
        ("١٢٣", good): "not a number",  # Arabic-Indic digits are digits to str.isdigit
        (str(NOW + 1), good): "does not match the timestamp",
        (str(NOW), good.replace("t=", "x=")): "does not match the timestamp",
        (str(NOW), f"t={NOW}"): "signature does not match",
        (str(NOW), f"t={NOW},v1=é"): "signature does not match",
        (str(NOW), good.upper()): "does not match the timestamp",
    }
    for (timestamp, header), reason in cases.items():
        refused = signature.problem(SECRET.encode(), body, timestamp, header, NOW)
        assert refused is not None and reason in refused, (timestamp, header, refused)


async def test_with_a_secret_a_signed_body_is_stored(sqlite_url: str) -> None:
    clock = Clock()
    body = json.dumps(sample("inbox_message")).encode()
    env = {"SMSTOOLS_WEBHOOK_SECRET": SECRET}
    async with running_bridge(
        sqlite_url, CONFIG, console(), run_worker=False, now=clock, env=env
    ) as bridge:
        response = await post(bridge, body, signed_headers(body, int(clock())))
    assert response.status_code == 200 and response.json()["accepted"] == 1
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
