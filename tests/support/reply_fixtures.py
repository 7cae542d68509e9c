"""A test config whose destinations take agents' replies, adapters for the fakes, signed Slack
events, gateway events and an in-process bridge to drive them: shared by the tests of replies
and of erasure."""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx

from bridge.chat.base import ChatAdapter
from bridge.chat.slack import SlackAdapter
from bridge.chat.telegram import TelegramAdapter
from bridge.config import Config, build
from testkit.fakes.slack import FakeSlack
from testkit.fakes.smstools import FakeSmstools
from testkit.fakes.telegram import FakeTelegram
from tests.support.harness import Clock, RunningBridge, running_bridge

SIGNING_SECRET = "slack-signing-secret"
TELEGRAM_SECRET = "telegram-webhook-secret-for-the-tests"
FORUM, GROUP = -1001234567890, -555000111
GROUP_LINE = "32460300000"
LINE, CUSTOMER, WA_CUSTOMER = "32460200000", "32470123456", "32470999999"


def env(smstools: FakeSmstools) -> dict[str, str]:
    return {
        "SLACK_BOT_TOKEN": "xoxb-test",
        "TELEGRAM_BOT_TOKEN": FakeTelegram.TOKEN,
        "SMSTOOLS_CLIENT_ID": "client-test",
        "SMSTOOLS_CLIENT_SECRET": "secret-test",
        "SMSTOOLS_API_URL": smstools.api_url,
        "SLACK_SIGNING_SECRET": SIGNING_SECRET,
        "TELEGRAM_WEBHOOK_SECRET": TELEGRAM_SECRET,
        "BRIDGE_JOB_LEASE": "60",
    }


CONFIG: dict[str, Any] = {
    "destinations": {
        "support": {
            "slack": {"channel": "C0SUPPORT"},
            "max_rate": "unlimited",
            "replies": {"prefix": "note:", "allow": ["U0AGENT", "U0OTHER"]},
        },
        "nl-team": {
            "telegram": {"chat_id": FORUM, "topics": True},
            "max_rate": "unlimited",
            "replies": True,
        },
        "group": {
            "telegram": {"chat_id": GROUP},
            "max_rate": "unlimited",
            "replies": True,
        },
    },
    "routes": [
        {"match": {"receiver": GROUP_LINE}, "to": ["group"]},
        {"match": {"type": "whatsapp"}, "to": ["nl-team"]},
        {"match": {"receiver": "+32 460 20 00 00"}, "to": ["support"]},
    ],
}


def make_config(smstools: FakeSmstools) -> Config:
    return build(copy.deepcopy(CONFIG), "test config", env(smstools))


def adapters(slack: FakeSlack, telegram: FakeTelegram) -> dict[str, ChatAdapter]:
    return {
        "support": SlackAdapter("support", "xoxb-test", "C0SUPPORT", base_url=slack.api_url),
        "nl-team": TelegramAdapter(
            "nl-team", FakeTelegram.TOKEN, FORUM, topics=True, api_url=telegram.url, timeout=2.0
        ),
        "group": TelegramAdapter(
            "group", FakeTelegram.TOKEN, GROUP, topics=False, api_url=telegram.url, timeout=2.0
        ),
    }


_counter = 0


def _next() -> int:
    global _counter
    _counter += 1
    return _counter


def inbox(
    content: str, sender: str = CUSTOMER, kind: str = "sms", receiver: str = LINE
) -> dict[str, Any]:
    n = _next()
    return {
        "webhook_id": f"wh_reply_{n}",
        "webhook_type": "inbox_message",
        "message": {
            "id": f"in{n}",
            "date": "2026-11-26 10:00:00",
            "sender": sender,
            "receiver": receiver,
            "content": content,
            "type": kind,
        },
    }


def report(messageid: str, code: int, *, read: bool = False) -> dict[str, Any]:
    message: dict[str, Any] = {
        "messageid": messageid,
        "datetime": "2026-11-26 10:01:00",
        "sender": LINE,
        "receiver": CUSTOMER,
        "delivery_code": str(code),
    }
    if read:
        message |= {"read_status": "message_read", "read_datetime": "2026-11-26 10:02:00"}
    return {
        "webhook_id": f"wh_report_{_next()}",
        "webhook_type": "read_report" if read else "delivery_report",
        "message": message,
    }


def sign(body: bytes, timestamp: int, secret: str = SIGNING_SECRET) -> dict[str, str]:
    """Slack's v0 signature, computed here from its documentation (not with the SDK)."""
    base = f"v0:{timestamp}:".encode() + body
    digest = hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()
    return {
        "X-Slack-Request-Timestamp": str(timestamp),
        "X-Slack-Signature": f"v0={digest}",
        "Content-Type": "application/json",
    }


def slack_event(
    text: str, thread_ts: str | None, ts: str, *, user: str = "U0AGENT", **extra: Any
) -> dict[str, Any]:
    event: dict[str, Any] = {
        "type": "message",
        "channel": "C0SUPPORT",
        "user": user,
        "text": text,
        "ts": ts,
        **extra,
    }
    if thread_ts is not None:
        event["thread_ts"] = thread_ts
    return {
        "type": "event_callback",
        "team_id": "T0FAKE",
        "event_id": f"Ev{_next():08d}",
        "event_time": 1_800_000_000,
        "event": event,
    }


class Bridge:
    def __init__(self, running: RunningBridge, clock: Clock) -> None:
        self.running, self.clock = running, clock

    async def webhook(self, *items: dict[str, Any]) -> None:
        assert (await self.running.post(list(items))).status_code == 200
        await self.running.worker.drain()

    async def slack(
        self, envelope: dict[str, Any], *, headers: dict[str, str] | None = None
    ) -> httpx.Response:
        body = json.dumps(envelope).encode()
        given = headers if headers is not None else sign(body, int(self.clock()))
        return await self.running.client.post("/slack/events", content=body, headers=given)

    async def telegram(
        self, update: dict[str, Any], secret: str = TELEGRAM_SECRET
    ) -> httpx.Response:
        return await self.running.client.post(
            "/telegram/webhook",
            json=update,
            headers={"X-Telegram-Bot-Api-Secret-Token": secret},
        )

    async def drain(self) -> None:
        await self.running.worker.drain()


@asynccontextmanager
async def bridge_for(
    database_url: str,
    slack: FakeSlack,
    telegram: FakeTelegram,
    smstools: FakeSmstools,
    document: dict[str, Any] | None = None,
    environ: dict[str, str] | None = None,
) -> AsyncIterator[Bridge]:
    """The bridge in-process on a clock of its own, worker run by `drain`: with `CONFIG`
    (or `document`) and `env` (or `environ`)."""
    clock = Clock()
    config = build(copy.deepcopy(document or CONFIG), "test config", env(smstools))
    async with running_bridge(
        database_url,
        config,
        adapters(slack, telegram),
        run_worker=False,
        now=clock,
        env=environ or env(smstools),
    ) as running:
        yield Bridge(running, clock)


async def thread_of_customer(bridge: Bridge, slack: FakeSlack) -> str:
    await bridge.webhook(inbox("Hello, where is my order?"))
    return slack.posts("C0SUPPORT")[0].ts


def topic_message(telegram: FakeTelegram, topic: int, text: str) -> dict[str, Any]:
    """An agent's message in a customer's forum topic, as a Bot API update carries it."""
    return {
        "message_id": telegram.post_as_member(FORUM, text),
        "message_thread_id": topic,
        "is_topic_message": True,
        "from": {"id": 123456789, "is_bot": False, "first_name": "Agent"},
        "chat": {"id": FORUM, "type": "supergroup", "is_forum": True},
        "date": 1_800_000_000,
        "text": text,
    }


def notes(slack: FakeSlack) -> list[str]:
    return [p.text or "" for p in slack.posts("C0SUPPORT") if (p.text or "").startswith("⚠️")]
