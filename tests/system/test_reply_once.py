"""An agent's answer reaches the customer at most once, and the agent is never told "not sent"
when it was (issue 25 §2): a 5xx after the gateway accepted a send is never resent, a 2xx is
accepted whatever its body, two bots in one chat give one SMS per chat message and drop none,
and the Telegram webhook's secret is long, well formed, or generated."""

from __future__ import annotations

import asyncio
import copy
import re
import socket
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from pydantic import SecretStr
from sqlalchemy import text

from bridge.chat.telegram import TelegramAdapter
from bridge.cli import main
from bridge.config import build
from bridge.errors import Reason
from bridge.settings import Settings, SettingsError, normalise_database_url
from bridge.smstools.api import SendOutcomeUnknown, SmstoolsApi, SmstoolsRetryable
from bridge.store import replies
from bridge.store.db import Database
from bridge.store.migrations import migrate
from testkit.fakes.slack import FakeSlack
from testkit.fakes.smstools import FakeSmstools
from testkit.fakes.telegram import FakeTelegram
from tests.support.harness import Clock, running_bridge
from tests.support.reply_fixtures import (
    CUSTOMER,
    FORUM,
    TELEGRAM_SECRET,
    WA_CUSTOMER,
    Bridge,
    bridge_for,
    inbox,
    notes,
    slack_event,
    thread_of_customer,
    topic_message,
)

MAY_NOT = "may not have been sent — look for it in the Smstools dashboard's sent messages"
NIGHT_TOKEN = "654321:NIGHT-token"
DAY_BOT, NIGHT_BOT = FakeTelegram.TOKEN.split(":")[0], NIGHT_TOKEN.split(":")[0]


def reactions_on(slack: FakeSlack, ts: str) -> list[str]:
    return [r.name for r in slack.reactions("C0SUPPORT") if r.ts == ts]


async def answer(bridge: Bridge, slack: FakeSlack, thread: str, text: str) -> str:
    """An agent's answer in the thread, delivered, and delivered again an hour later."""
    ts = slack.post_as_member("C0SUPPORT")
    assert (await bridge.slack(slack_event(text, thread, ts))).status_code == 200
    await bridge.drain()
    bridge.clock.advance(3600)
    await bridge.drain()
    return ts


# -- a 5xx or a strange 2xx after the gateway accepted the send ----------------------------


@pytest.mark.parametrize("status", [500, 502, 504])
async def test_a_5xx_after_the_gateway_accepted_is_never_resent_and_shows_thinking(
    status: int,
    sqlite_url: str,
    slack: FakeSlack,
    telegram: FakeTelegram,
    smstools: FakeSmstools,
) -> None:
    async with bridge_for(sqlite_url, slack, telegram, smstools) as bridge:
        thread = await thread_of_customer(bridge, slack)
        smstools.set_accept_then_answer(status, times=1)
        ts = await answer(bridge, slack, thread, "Refund approved")
    assert [(s.to, s.message) for s in smstools.sent()] == [([CUSTOMER], "Refund approved")]
    assert len(smstools.calls("/message/send")) == 1
    assert reactions_on(slack, ts) == ["thinking_face"]
    (note,) = notes(slack)
    assert MAY_NOT in note


@pytest.mark.parametrize("not_processed", ["503", "429"])
async def test_an_answer_saying_the_send_was_not_processed_is_retried_once_it_passes(
    not_processed: str,
    sqlite_url: str,
    slack: FakeSlack,
    telegram: FakeTelegram,
    smstools: FakeSmstools,
) -> None:
    async with bridge_for(sqlite_url, slack, telegram, smstools) as bridge:
        thread = await thread_of_customer(bridge, slack)
        if not_processed == "503":
            smstools.set_down(times=1, status=503)
        else:
            smstools.set_rate_limited(retry_after=1, times=1)
        ts = await answer(bridge, slack, thread, "Refund approved")
    assert [s.message for s in smstools.sent()] == ["Refund approved"]
    assert len(smstools.calls("/message/send")) == 2
    assert reactions_on(slack, ts) == ["ok_hand"] and notes(slack) == []


async def test_a_200_whose_body_is_not_json_is_accepted_with_a_note_and_not_resent(
    sqlite_url: str, slack: FakeSlack, telegram: FakeTelegram, smstools: FakeSmstools
) -> None:
    async with bridge_for(sqlite_url, slack, telegram, smstools) as bridge:
        thread = await thread_of_customer(bridge, slack)
        smstools.set_accept_then_answer(200, times=1)
        ts = await answer(bridge, slack, thread, "Refund approved")
    assert [s.message for s in smstools.sent()] == ["Refund approved"]
    assert len(smstools.calls("/message/send")) == 1
    assert reactions_on(slack, ts) == ["ok_hand"]
    (note,) = notes(slack)
    assert "message id" in note and "delivery reports" in note
    assert "not sent" not in note


async def test_send_retries_only_what_certainly_did_not_arrive_and_balance_any_5xx(
    smstools: FakeSmstools,
) -> None:
    async def send(api: SmstoolsApi) -> str | None:
        return await api.send(to=CUSTOMER, sender="32460200000", message="Hi", reference="r1")

    async with SmstoolsApi(
        "client-test", SecretStr("secret-test"), base_url=smstools.api_url
    ) as api:
        for status in (500, 502, 504):
            smstools.set_accept_then_answer(status, times=1)
            with pytest.raises(SendOutcomeUnknown) as unknown:
                await send(api)
            assert unknown.value.reason is Reason.SERVER and str(status) in unknown.value.detail
        smstools.set_down(times=1, status=503)
        with pytest.raises(SmstoolsRetryable):
            await send(api)
        smstools.set_rate_limited(retry_after=3, times=1)
        with pytest.raises(SmstoolsRetryable) as limited:
            await send(api)
        assert limited.value.retry_after == 3.0
        smstools.set_accept_then_answer(200, times=1)
        assert await send(api) is None  # accepted; the gateway's id is unknown
        assert isinstance(await send(api), str)
        smstools.set_down(times=1, status=502)
        with pytest.raises(SmstoolsRetryable):
            await api.balance()  # a read: safe to repeat
    assert len(smstools.sent()) == 5
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    async with SmstoolsApi("id", SecretStr("s"), base_url=f"http://127.0.0.1:{port}/v1") as api:
        with pytest.raises(SmstoolsRetryable) as refused:
            await send(api)
    assert refused.value.reason is Reason.CONNECTION


# -- two bots in one chat ------------------------------------------------------------------

TWO_BOTS: dict[str, Any] = {
    "destinations": {
        "nl-team": {
            "telegram": {"chat_id": FORUM, "topics": True},
            "max_rate": "unlimited",
            "replies": True,
        },
        "nl-night": {
            "telegram": {"chat_id": FORUM, "topics": True, "token_env": "TELEGRAM_NIGHT_TOKEN"},
            "max_rate": "unlimited",
            "replies": True,
        },
    },
    "routes": [
        {"match": {"type": "whatsapp"}, "to": ["nl-team"]},
        {"match": {"type": "sms"}, "to": ["nl-night"]},
    ],
}


@pytest.fixture(scope="module")
def two_bots_server() -> Iterator[FakeTelegram]:
    with FakeTelegram(tokens=(FakeTelegram.TOKEN, NIGHT_TOKEN)) as fake:
        yield fake


@pytest.fixture
def two_bots(two_bots_server: FakeTelegram) -> FakeTelegram:
    two_bots_server.reset()
    two_bots_server.clear()
    return two_bots_server


def two_bots_env(smstools: FakeSmstools, **extra: str) -> dict[str, str]:
    return {
        "TELEGRAM_BOT_TOKEN": FakeTelegram.TOKEN,
        "TELEGRAM_NIGHT_TOKEN": NIGHT_TOKEN,
        "SMSTOOLS_CLIENT_ID": "client-test",
        "SMSTOOLS_CLIENT_SECRET": "secret-test",
        "SMSTOOLS_API_URL": smstools.api_url,
        "TELEGRAM_WEBHOOK_SECRET": TELEGRAM_SECRET,
        **extra,
    }


@asynccontextmanager
async def two_bots_bridge(
    database_url: str, telegram: FakeTelegram, smstools: FakeSmstools, environ: dict[str, str]
) -> AsyncIterator[Bridge]:
    clock = Clock()
    adapters = {
        name: TelegramAdapter(name, token, FORUM, topics=True, api_url=telegram.url, timeout=2.0)
        for name, token in (("nl-team", FakeTelegram.TOKEN), ("nl-night", NIGHT_TOKEN))
    }
    config = build(copy.deepcopy(TWO_BOTS), "test config", environ)
    async with running_bridge(
        database_url, config, adapters, run_worker=False, now=clock, env=environ
    ) as running:
        yield Bridge(running, clock)


async def deliver(
    bridge: Bridge, bot: str, update: dict[str, Any], secret: str = TELEGRAM_SECRET
) -> httpx.Response:
    return await bridge.running.client.post(
        f"/telegram/webhook/{bot}",
        json=update,
        headers={"X-Telegram-Bot-Api-Secret-Token": secret},
    )


async def two_topics(bridge: Bridge, telegram: FakeTelegram) -> tuple[int, int]:
    """A WhatsApp customer's topic (the day bot's) and an SMS customer's (the night bot's)."""
    await bridge.webhook(inbox("Hallo", sender=WA_CUSTOMER, kind="whatsapp"))
    await bridge.webhook(inbox("Hello"))
    day, night = (topic.message_thread_id for topic in telegram.topics(FORUM))
    return day, night


async def test_one_message_seen_by_two_bots_is_sent_once(
    database_url: str, two_bots: FakeTelegram, smstools: FakeSmstools
) -> None:
    environ = two_bots_env(smstools)
    async with two_bots_bridge(database_url, two_bots, smstools, environ) as bridge:
        day, _ = await two_topics(bridge, two_bots)
        message = topic_message(two_bots, day, "Of course, see you Monday!")
        first = await deliver(bridge, DAY_BOT, two_bots.update(FakeTelegram.TOKEN, message))
        second = await deliver(bridge, NIGHT_BOT, two_bots.update(NIGHT_TOKEN, message))
        assert [first.status_code, second.status_code] == [200, 200]
        await bridge.drain()
    assert [(s.to, s.message) for s in smstools.sent()] == [
        ([WA_CUSTOMER], "Of course, see you Monday!")
    ]


async def test_coinciding_update_ids_of_two_bots_drop_no_answer(
    sqlite_url: str, two_bots: FakeTelegram, smstools: FakeSmstools
) -> None:
    environ = two_bots_env(smstools)
    async with two_bots_bridge(sqlite_url, two_bots, smstools, environ) as bridge:
        day, night = await two_topics(bridge, two_bots)
        two_bots.set_next_update_id(FakeTelegram.TOKEN, 500)
        two_bots.set_next_update_id(NIGHT_TOKEN, 500)
        to_day = two_bots.update(FakeTelegram.TOKEN, topic_message(two_bots, day, "Ja, zeker"))
        to_night = two_bots.update(NIGHT_TOKEN, topic_message(two_bots, night, "Yes, sure"))
        assert to_day["update_id"] == to_night["update_id"] == 500
        answers = [
            await deliver(bridge, DAY_BOT, to_day),
            await deliver(bridge, NIGHT_BOT, to_night),
        ]
        assert [a.json()["duplicate"] for a in answers] == [False, False]
        # A bot's own update, sent again by Telegram, is still a duplicate.
        assert (await deliver(bridge, DAY_BOT, to_day)).json()["duplicate"] is True
        await bridge.drain()
    assert sorted((s.to[0], s.message) for s in smstools.sent()) == [
        (CUSTOMER, "Yes, sure"),
        (WA_CUSTOMER, "Ja, zeker"),
    ]


async def test_updates_for_an_unknown_bot_or_an_unnamed_one_among_two_are_refused(
    sqlite_url: str, two_bots: FakeTelegram, smstools: FakeSmstools
) -> None:
    environ = two_bots_env(smstools)
    async with two_bots_bridge(sqlite_url, two_bots, smstools, environ) as bridge:
        update = {"update_id": 1, "message": {"message_id": 1}}
        unknown = await deliver(bridge, "999", update)
        unnamed = await bridge.running.client.post(
            "/telegram/webhook",
            json=update,
            headers={"X-Telegram-Bot-Api-Secret-Token": TELEGRAM_SECRET},
        )
    assert unknown.status_code == 404 and unnamed.status_code == 404
    assert "set-webhook" in unnamed.json()["error"]


async def test_the_store_keeps_one_reply_per_chat_message_after_an_upgrade(
    database_url: str,
) -> None:
    """Duplicates an older bridge stored do not stop the migration; new ones are refused."""
    database = Database(normalise_database_url(database_url))
    try:
        await _upgrade_then_add_twice(database)
    finally:
        await database.close()


ONE_CHAT_MESSAGE_ONE_REPLY = 10  # the migration step that made a reply's message unique


async def _upgrade_then_add_twice(database: Database) -> None:
    await migrate(database, ONE_CHAT_MESSAGE_ONE_REPLY - 1)
    async with database.transaction() as connection:
        for event_id in (1, 2):
            await connection.execute(
                text(
                    "INSERT INTO chat_events (id, platform, event_key, status, body, received_at) "
                    f"VALUES ({event_id}, 'telegram', '{event_id}', 'reply', '{{}}', 0)"
                )
            )
            await connection.execute(
                text(
                    "INSERT INTO replies (chat_event_id, destination, conversation_id, chat, "
                    "message, state, created_at, updated_at) "
                    f"VALUES ({event_id}, 'nl-team', 1, '-100', '7', 'sent', 0, 0)"
                )
            )
    await migrate(database)
    async with database.transaction() as connection:
        again = await replies.add(
            database,
            connection,
            platform="telegram",
            chat_event_id=3,
            destination="nl-night",
            conversation_id=1,
            chat="-100",
            message="7",
            now=1.0,
        )
        other = await replies.add(
            database,
            connection,
            platform="telegram",
            chat_event_id=4,
            destination="nl-team",
            conversation_id=1,
            chat="-100",
            message="8",
            now=1.0,
        )
    assert again is None and isinstance(other, int)


# -- the Telegram webhook's secret ---------------------------------------------------------


@pytest.mark.parametrize(
    ("secret", "why"),
    [
        ("x", "1 characters"),
        ("a" * 31, "31 characters"),
        ("a" * 31 + "!", "A-Z a-z 0-9 _ -"),
        ("a" * 20 + " " + "b" * 20, "A-Z a-z 0-9 _ -"),
        ("a" * 257, "256"),
    ],
)
def test_a_short_or_malformed_telegram_secret_is_refused_in_one_line(secret: str, why: str) -> None:
    with pytest.raises(SettingsError) as refused:
        Settings.from_env({"TELEGRAM_WEBHOOK_SECRET": secret})
    (problem,) = refused.value.problems
    assert problem.startswith("TELEGRAM_WEBHOOK_SECRET: ") and why in problem
    assert "\n" not in problem and secret not in problem


def test_a_long_well_formed_telegram_secret_is_accepted() -> None:
    secret = "A-z_0" * 7
    settings = Settings.from_env({"TELEGRAM_WEBHOOK_SECRET": secret})
    assert settings.telegram_webhook_secret is not None
    assert settings.telegram_webhook_secret.get_secret_value() == secret


def test_an_unset_secret_is_generated_stored_and_used_by_set_webhook_and_the_edge(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    two_bots: FakeTelegram,
    smstools: FakeSmstools,
) -> None:
    database_url = f"sqlite:///{tmp_path / 'bridge.db'}"
    environ = two_bots_env(smstools, TELEGRAM_API_URL=two_bots.url)
    del environ["TELEGRAM_WEBHOOK_SECRET"]
    path = tmp_path / "bridge.yaml"
    path.write_text(yaml.safe_dump(TWO_BOTS))
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("TELEGRAM_WEBHOOK_SECRET", raising=False)
    monkeypatch.setenv("BRIDGE_CONFIG", str(path))
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("BRIDGE_PUBLIC_URL", "https://bridge.example")

    assert main(["telegram", "set-webhook"]) == 0
    day, night = two_bots.webhooks[FakeTelegram.TOKEN], two_bots.webhooks[NIGHT_TOKEN]
    assert day["url"] == f"https://bridge.example/telegram/webhook/{DAY_BOT}"
    assert night["url"] == f"https://bridge.example/telegram/webhook/{NIGHT_BOT}"
    secret = day["secret_token"]
    assert night["secret_token"] == secret and re.fullmatch(r"[A-Za-z0-9_-]{32,256}", secret)
    assert secret not in capsys.readouterr().out
    assert main(["telegram", "set-webhook"]) == 0  # the same secret, kept
    assert two_bots.webhooks[FakeTelegram.TOKEN]["secret_token"] == secret

    async def statuses() -> list[int]:
        async with two_bots_bridge(database_url, two_bots, smstools, environ) as bridge:
            update = {"update_id": 1, "message": {"message_id": 1}}
            return [
                (await deliver(bridge, DAY_BOT, update, secret)).status_code,
                (await deliver(bridge, NIGHT_BOT, update, "x" * 43)).status_code,
            ]

    assert asyncio.run(statuses()) == [200, 403]
