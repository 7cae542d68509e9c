"""Unauthenticated input never gives a 5xx: whatever bytes arrive in the signature,
timestamp, secret-token, content-type and content-length headers and in the body of the three
edges (Smstools webhooks, Slack events, Telegram updates), the answer is 2xx or 4xx and
nothing is logged at ERROR."""

from __future__ import annotations

import hashlib
import hmac
import io
import logging
from collections.abc import AsyncIterator

import httpx
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from bridge.chat.console import ConsoleAdapter
from bridge.config import load
from bridge.http import signature
from tests.support.harness import TOKEN, RunningBridge, running_bridge

NOW = 1_800_000_000
SMSTOOLS_SECRET = "whsec-fuzz-0123456789abcdef"
SLACK_SECRET = "slack-signing-secret-fuzz"
TELEGRAM_SECRET = "telegram-webhook-secret-for-the-fuzzing-tests"

EDGES = {
    "smstools": f"/webhooks/smstools/{TOKEN}",
    "slack": "/slack/events",
    "telegram": "/telegram/webhook",
}
# Deterministic, and few enough examples for CI's two cores.
FUZZ = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture
async def edges(sqlite_url: str) -> AsyncIterator[RunningBridge]:
    """One bridge, every edge enabled with its secret, the worker idle."""
    env = {
        "SMSTOOLS_WEBHOOK_SECRET": SMSTOOLS_SECRET,
        "SLACK_SIGNING_SECRET": SLACK_SECRET,
        "TELEGRAM_WEBHOOK_SECRET": TELEGRAM_SECRET,
    }
    console = {"console": ConsoleAdapter("console", io.StringIO())}
    async with running_bridge(
        sqlite_url, load(None, {}), console, run_worker=False, now=lambda: NOW, env=env
    ) as bridge:
        yield bridge


def genuine(edge: str, name: str, body: bytes) -> bytes:
    """What the platform itself would send in this header for this body."""
    if name == "timestamp":
        return str(NOW).encode()
    if name == "content-type":
        return b"application/json"
    if name == "content-length":
        return str(len(body)).encode()
    if name == "secret-token":
        return TELEGRAM_SECRET.encode()
    if edge == "slack":
        base = f"v0:{NOW}:".encode() + body
        return b"v0=" + hmac.new(SLACK_SECRET.encode(), base, hashlib.sha256).hexdigest().encode()
    return signature.sign(SMSTOOLS_SECRET.encode(), NOW, body).encode()


HEADER_NAMES = {
    "smstools": {
        "signature": signature.SIGNATURE_HEADER,
        "timestamp": signature.TIMESTAMP_HEADER,
    },
    "slack": {"signature": "x-slack-signature", "timestamp": "x-slack-request-timestamp"},
    "telegram": {"secret-token": "x-telegram-bot-api-secret-token"},
}
FUZZED = ("signature", "timestamp", "secret-token", "content-type", "content-length")

# Per header: absent, what the platform would send, or any bytes at all (non-ASCII included).
header_values = st.one_of(st.none(), st.just("genuine"), st.binary(max_size=80))
bodies = st.one_of(
    st.binary(max_size=600),
    st.just(b'{"type": "url_verification", "challenge": "x"}'),
    st.just(b'{"update_id": 1, "message": {"text": "hi"}}'),
    st.just(b'[{"webhook_id": "w1", "webhook_type": "inbox_message", "message": {}}]'),
)


async def answer(
    bridge: RunningBridge, edge: str, body: bytes, chosen: dict[str, bytes | str | None]
) -> httpx.Response:
    headers: list[tuple[bytes, bytes]] = []
    for name in FUZZED:
        value = chosen.get(name)
        if value is None:
            continue
        header = HEADER_NAMES[edge].get(name, name)
        raw = genuine(edge, name, body) if value == "genuine" else value
        assert isinstance(raw, bytes)
        headers.append((header.encode(), raw))
    # Straight to the ASGI app: a server in front would refuse some of these bytes itself,
    # and the app must hold without that help.
    transport = httpx.ASGITransport(app=bridge.app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://bridge") as client:
        # A content-length given here is sent instead of the body's own.
        return await client.post(EDGES[edge], content=body, headers=headers)


@FUZZ
@given(
    edge=st.sampled_from(sorted(EDGES)),
    body=bodies,
    chosen=st.fixed_dictionaries({name: header_values for name in FUZZED}),
)
@example(
    edge="slack",
    body=b"{}",
    chosen={"signature": "v0=caf\xe9".encode("latin-1"), "timestamp": "genuine"},
)
@example(edge="smstools", body=b"[]", chosen={"content-length": "\xb2".encode("latin-1")})
@example(edge="telegram", body=b"{}", chosen={"secret-token": b"\xff\x00\xe9"})
async def test_no_bytes_in_the_headers_or_body_get_a_5xx_or_an_error_log(
    edges: RunningBridge,
    caplog: pytest.LogCaptureFixture,
    edge: str,
    body: bytes,
    chosen: dict[str, bytes | str | None],
) -> None:
    caplog.clear()
    with caplog.at_level(logging.ERROR):
        response = await answer(edges, edge, body, chosen)
    assert response.status_code < 500, (response.status_code, response.text)
    errors = [record for record in caplog.records if record.levelno >= logging.ERROR]
    assert errors == [], [record.getMessage() for record in errors]
