"""A test config routing inbox messages to Slack and Telegram, adapters for the fakes,
inbox events and a row reader: shared by the end-to-end tests of inbox messages (pipeline,
outages, slow APIs, rate limits, dead letters, privacy, hostile input)."""

from __future__ import annotations

import copy
from typing import Any

from bridge.chat.base import ChatAdapter
from bridge.chat.slack import SlackAdapter
from bridge.chat.telegram import TelegramAdapter
from bridge.config import Config, build
from bridge.settings import normalise_database_url
from bridge.store.db import Database
from testkit.fakes.slack import FakeSlack
from testkit.fakes.telegram import FakeTelegram

SLACK_TOKEN = "xoxb-test"
FORUM = -1001234567890
ENV = {"SLACK_BOT_TOKEN": SLACK_TOKEN, "TELEGRAM_BOT_TOKEN": FakeTelegram.TOKEN}
LINE_NL, LINE_FR = "32460200000", "32460300000"

CONFIG: dict[str, Any] = {
    "destinations": {
        # Pacing has its own tests; here it would only slow the assertions down.
        "support": {"slack": {"channel": "C0SUPPORT"}, "max_rate": "unlimited"},
        "sales": {"slack": {"channel": "C0SALES"}, "max_rate": "unlimited"},
        "nl-team": {"telegram": {"chat_id": FORUM, "topics": True}, "max_rate": "unlimited"},
    },
    "routes": [
        {"match": {"receiver": "+32 460 20 00 00", "type": "whatsapp"}, "to": ["nl-team"]},
        {"match": {"receiver": "+32 460 20 00 00"}, "to": ["support"]},
        {"match": {"receiver": "3246030*"}, "to": ["sales", "support"]},
    ],
    "lines": {"+32 460 20 00 00": "Support line"},
    "threads": {"idle_after": "1h"},
}


def make_config(overrides: dict[str, Any] | None = None) -> Config:
    """The test config; `overrides` replace its top-level keys."""
    return build({**copy.deepcopy(CONFIG), **(overrides or {})}, "test config", ENV)


def adapters(slack: FakeSlack, telegram: FakeTelegram) -> dict[str, ChatAdapter]:
    """The config's destinations, each a real adapter pointed at its fake."""
    return {
        "support": SlackAdapter("support", SLACK_TOKEN, "C0SUPPORT", base_url=slack.api_url),
        "sales": SlackAdapter("sales", SLACK_TOKEN, "C0SALES", base_url=slack.api_url),
        "nl-team": TelegramAdapter(
            "nl-team", FakeTelegram.TOKEN, FORUM, topics=True, api_url=telegram.url, timeout=2.0
        ),
    }


_counter = 0


def inbox(
    sender: str,
    content: str,
    *,
    receiver: str = LINE_NL,
    kind: str = "sms",
    webhook_id: str | None = None,
) -> dict[str, Any]:
    """An inbox_message event as Smstools sends it, with a fresh webhook_id."""
    global _counter
    _counter += 1
    return {
        "webhook_id": webhook_id or f"wh_test_{_counter}",
        "webhook_type": "inbox_message",
        "username": "myusername",
        "timezone": "Europe/Brussels",
        "message": {
            "id": str(_counter),
            "date": "2026-11-26 10:00:00",
            "sender": sender,
            "receiver": receiver,
            "content": content,
            "type": kind,
        },
    }


async def rows(database_url: str, query: Any) -> list[Any]:
    """The rows `query` finds, read through a connection of its own."""
    database = Database(normalise_database_url(database_url))
    try:
        async with database.transaction() as connection:
            return list(await connection.execute(query))
    finally:
        await database.close()
