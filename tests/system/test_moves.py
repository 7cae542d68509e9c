"""A Telegram group that becomes a supergroup is followed: the job that met the move is posted
in the new chat, reply chains start afresh there, on-call is told once, and after a restart
the bridge posts to the new chat without asking Telegram again."""

from __future__ import annotations

from typing import Any

from bridge.chat.base import ChatAdapter
from bridge.chat.slack import SlackAdapter
from bridge.chat.telegram import TelegramAdapter
from bridge.config import Config, build
from testkit.fakes.slack import FakeSlack
from testkit.fakes.telegram import FakeTelegram
from tests.support.harness import Clock, RunningBridge, running_bridge

GROUP, SUPERGROUP = -4000000001, -1004000000001
SLACK_TOKEN = "xoxb-test"
ENV = {"SLACK_BOT_TOKEN": SLACK_TOKEN, "TELEGRAM_BOT_TOKEN": FakeTelegram.TOKEN}
_counter = 0


def config(alerts: bool = True) -> Config:
    document: dict[str, Any] = {
        "destinations": {
            "nl-group": {"telegram": {"chat_id": GROUP}, "max_rate": "unlimited"},
            "oncall": {"slack": {"channel": "C0ONCALL"}, "max_rate": "unlimited"},
        },
        "default": ["nl-group"],
        "threads": {"idle_after": "1h"},
    }
    if alerts:
        document["alerts"] = {"to": ["oncall", "nl-group"]}
    return build(document, "test config", ENV)


def adapters(slack: FakeSlack, telegram: FakeTelegram) -> dict[str, ChatAdapter]:
    return {
        "nl-group": TelegramAdapter(
            "nl-group", FakeTelegram.TOKEN, GROUP, topics=False, api_url=telegram.url
        ),
        "oncall": SlackAdapter("oncall", SLACK_TOKEN, "C0ONCALL", base_url=slack.api_url),
    }


def inbox(sender: str, content: str) -> dict[str, Any]:
    global _counter
    _counter += 1
    return {
        "webhook_id": f"wh_moves_{_counter}",
        "webhook_type": "inbox_message",
        "message": {
            "id": f"mv{_counter}",
            "sender": sender,
            "receiver": "32460200000",
            "content": content,
            "type": "sms",
        },
    }


async def deliver(bridge: RunningBridge, clock: Clock) -> None:
    for _ in range(3):  # the job that met the move is retried about a second later
        clock.advance(2)
        await bridge.worker.drain()


async def test_a_group_upgraded_to_a_supergroup_is_followed_and_told_once(
    database_url: str, slack: FakeSlack, telegram: FakeTelegram
) -> None:
    clock = Clock()
    async with running_bridge(
        database_url, config(), adapters(slack, telegram), run_worker=False, now=clock
    ) as bridge:
        await bridge.post([inbox("32470000001", "before the upgrade")])
        await deliver(bridge, clock)
        telegram.set_migrated(GROUP, SUPERGROUP)
        await bridge.post([inbox("32470000001", "after one"), inbox("32470000002", "new one")])
        await deliver(bridge, clock)
        await bridge.post([inbox("32470000001", "after two")])
        await deliver(bridge, clock)
    refused = len(telegram.calls("sendMessage")) - len(telegram.messages())
    # A restart posts to the supergroup at once: no call to the old group any more.
    async with running_bridge(
        database_url, config(), adapters(slack, telegram), run_worker=False, now=clock
    ) as bridge:
        await bridge.post([inbox("32470000001", "after the restart")])
        await deliver(bridge, clock)
        dead = await bridge.client.get("/readyz")

    (before,) = telegram.messages(GROUP)
    moved = [m for m in telegram.messages(SUPERGROUP) if "became a supergroup" not in m.plain_text]
    texts = [m.plain_text.rsplit("\n", 1)[-1] for m in moved]
    assert before.plain_text.endswith("before the upgrade")
    assert sorted(texts[:2]) == ["after one", "new one"] and texts[2:] == [
        "after two",
        "after the restart",
    ]
    # The first customer's chain starts afresh in the supergroup and goes on there.
    first = next(m for m in moved if m.plain_text.endswith("after one"))
    assert first.reply_to_message_id is None
    assert [m.reply_to_message_id for m in moved[2:]] == [first.message_id] * 2
    # The jobs in flight when the group moved met it (one or both of the two): retried, not
    # lost; later jobs went to the supergroup directly.
    assert 1 <= refused <= 2
    # On-call is told once, in Slack and in the supergroup itself.
    (notice,) = slack.posts("C0ONCALL")
    assert notice.text is not None and "nl-group: the Telegram group became a supergroup" in (
        notice.text
    )
    assert f"Set chat_id to {SUPERGROUP} in the config" in notice.text
    told = [m for m in telegram.messages(SUPERGROUP) if "became a supergroup" in m.plain_text]
    assert len(told) == 1
    assert dead.status_code == 200


async def test_without_alerts_a_move_is_followed_and_logged(
    sqlite_url: str, slack: FakeSlack, telegram: FakeTelegram, caplog: Any
) -> None:
    clock = Clock()
    telegram.set_migrated(GROUP, SUPERGROUP)
    async with running_bridge(
        sqlite_url, config(alerts=False), adapters(slack, telegram), run_worker=False, now=clock
    ) as bridge:
        await bridge.post([inbox("32470000003", "hello")])
        await deliver(bridge, clock)
    (message,) = telegram.messages(SUPERGROUP)
    assert message.plain_text.endswith("hello") and slack.posts() == []
    warnings = [r.getMessage() for r in caplog.records if r.name == "bridge.delivery.moves"]
    assert warnings == [
        f"telegram destination 'nl-group' (chat {GROUP}): the group became the supergroup "
        f"{SUPERGROUP}; posting there from now on. Set chat_id to {SUPERGROUP} in the config"
    ]
