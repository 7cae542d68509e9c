"""A test config routing inbox messages to Slack and Telegram (and the same paced as the
platforms allow), adapters for the fakes, inbox events and a row reader: shared by the tests
of inbox messages (pipeline, outages, slow APIs, rate limits, combining, dead letters,
privacy, hostile input)."""

from __future__ import annotations

import copy
from typing import Any

from bridge.chat.base import ChatAdapter
from bridge.chat.slack import SlackAdapter
from bridge.chat.telegram import TelegramAdapter
from bridge.config import Config, build
from bridge.settings import normalise_database_url
from bridge.smstools.webhooks import InboxMessage, parse_event
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


PACED: dict[str, Any] = {
    "destinations": {  # no max_rate: the platforms' own limits apply
        "support": {"slack": {"channel": "C0SUPPORT"}},
        "sales": {"slack": {"channel": "C0SALES"}},
        "nl-team": {"telegram": {"chat_id": FORUM, "topics": True}},
    },
    "routes": [
        {"match": {"receiver": LINE_NL, "type": "whatsapp"}, "to": ["nl-team"]},
        {"match": {"receiver": LINE_NL}, "to": ["support"]},
        {"match": {"receiver": LINE_FR}, "to": ["sales"]},
    ],
}


def paced_config(**destinations: dict[str, Any]) -> Config:
    """Slack `support` (SMS to line NL), Slack `sales` (line FR) and the Telegram forum
    `nl-team` (WhatsApp to line NL), paced as the platforms allow, the support line named and
    threads idle after an hour; `destinations` add keys."""
    document: dict[str, Any] = {
        **copy.deepcopy(PACED),
        "lines": {"+32 460 20 00 00": "Support line"},
        "threads": {"idle_after": "1h"},
    }
    for name, extra in destinations.items():
        document["destinations"][name].update(extra)
    return build(document, "combine test", ENV)


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


def at(event: dict[str, Any], date: str) -> dict[str, Any]:
    """`event` (an `inbox` one) as written at `date` (`2026-11-26 09:10:00`)."""
    event["message"]["date"] = date
    return event


def parsed_inbox(*contents: str) -> list[InboxMessage]:
    """One customer's inbox messages, parsed, a minute apart from 09:10."""
    parsed = []
    for minute, content in enumerate(contents):
        event = parse_event(at(inbox("32470000001", content), f"2026-11-26 09:1{minute}:00"))
        assert isinstance(event, InboxMessage)
        parsed.append(event)
    return parsed


async def rows(database_url: str, query: Any) -> list[Any]:
    """The rows `query` finds, read through a connection of its own."""
    database = Database(normalise_database_url(database_url))
    try:
        async with database.transaction() as connection:
            return list(await connection.execute(query))
    finally:
        await database.close()
