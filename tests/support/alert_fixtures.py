"""A test config with an alerts section, adapters for the fakes, report and inbox events:
shared by the tests of delivery reports, read reports, alerts, retention and erasure."""

from __future__ import annotations

import copy
from typing import Any

from bridge.chat.base import ChatAdapter
from bridge.chat.slack import SlackAdapter
from bridge.chat.telegram import TelegramAdapter
from bridge.config import Config, build
from testkit.fakes.slack import FakeSlack
from testkit.fakes.telegram import FakeTelegram

SLACK_TOKEN = "xoxb-test"
ONCALL_CHAT = -1009999
LINE = "32460200000"  # the customers' line; its inbox messages go to the default, support
ENV = {"SLACK_BOT_TOKEN": SLACK_TOKEN, "TELEGRAM_BOT_TOKEN": FakeTelegram.TOKEN}

CONFIG: dict[str, Any] = {
    "destinations": {
        "support": {"slack": {"channel": "C0SUPPORT"}},
        "oncall": {"slack": {"channel": "C0ONCALL"}},
        "billing": {"slack": {"channel": "C0BILLING"}},
        "tg-oncall": {"telegram": {"chat_id": ONCALL_CHAT}},
    },
    "default": ["support"],
    "threads": {"idle_after": "1h"},
    "alerts": {
        "to": ["oncall"],
        "group_wait": "30s",
        "group_interval": "5m",
        "repeat_interval": "4h",
        # Most tests look at posting and editing; the ones about resolution set their own.
        "resolve_after": "1d",
        "mention": {"slack": "<!subteam^S0ONCALL>", "telegram": "@oncall_team"},
        "routes": [
            {
                "match": {"delivery_code_detail": [2000]},
                "to": ["billing", "oncall"],
                "group_wait": "0s",
            },
        ],
    },
}


def make_config(top: dict[str, Any] | None = None, **alerts: Any) -> Config:
    """The test config; `alerts` override keys of its alerts section, `top` the others."""
    document = copy.deepcopy(CONFIG) | (top or {})
    document["alerts"].update(alerts)
    return build(document, "test config", ENV)


def adapters(slack: FakeSlack, telegram: FakeTelegram) -> dict[str, ChatAdapter]:
    return {
        name: SlackAdapter(name, SLACK_TOKEN, channel, base_url=slack.api_url)
        for name, channel in (
            ("support", "C0SUPPORT"),
            ("oncall", "C0ONCALL"),
            ("billing", "C0BILLING"),
        )
    } | {
        "tg-oncall": TelegramAdapter(
            "tg-oncall", FakeTelegram.TOKEN, ONCALL_CHAT, topics=False, api_url=telegram.url
        )
    }


_counter = 0


def report(
    code: int | str,
    detail: int | str | None = None,
    *,
    receiver: str = "32470999888",
    sender: str = "Clinic",
    messageid: str | None = None,
    webhook_id: str | None = None,
    reference: str = "",
    content: str = "Your appointment is confirmed for Monday 9:30.",
) -> dict[str, Any]:
    """A delivery_report event as Smstools sends it: codes as strings."""
    global _counter
    _counter += 1
    message: dict[str, Any] = {
        "messageid": messageid or f"msg{_counter}",
        "datetime": "2026-01-01 09:00:00",
        "content": content,
        "sender": sender,
        "receiver": receiver,
        "reference": reference,
        "delivery_code": str(code),
        "delivery_status": "whatever",
    }
    if detail is not None:
        message["delivery_code_detail"] = str(detail)
    return {
        "webhook_id": webhook_id or f"wh_report_{_counter}",
        "webhook_type": "delivery_report",
        "username": "myusername",
        "timezone": "Europe/Brussels",
        "message": message,
    }


def inbox(sender: str, content: str) -> dict[str, Any]:
    """An inbox_message event from `sender` to `LINE`, without the gateway's date."""
    global _counter
    _counter += 1
    return {
        "webhook_id": f"wh_inbox_{_counter}",
        "webhook_type": "inbox_message",
        "message": {
            "id": f"in{_counter}",
            "sender": sender,
            "receiver": LINE,
            "content": content,
            "type": "sms",
        },
    }
