"""Agents' Telegram answers over long polling (TELEGRAM_UPDATES=polling), in-process against the
fake Telegram's getUpdates: the webhook is deleted first, an answer reaches the fake Smstools
once, also when the connection is cut mid-answer or the update came by the webhook before, and a
409 from another poller is waited out."""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest

from bridge.config import build
from bridge.http.telegram_polling import hold_name
from bridge.settings import normalise_database_url
from bridge.store import facts as facts_store
from bridge.store import holds
from bridge.store.db import Database
from testkit.fakes.slack import FakeSlack
from testkit.fakes.smstools import FakeSmstools
from testkit.fakes.telegram import FakeTelegram
from tests.support.harness import RunningBridge, running_bridge, wait_until
from tests.support.reply_fixtures import (
    CONFIG,
    FORUM,
    LINE,
    TELEGRAM_SECRET,
    WA_CUSTOMER,
    adapters,
    env,
    inbox,
    topic_message,
)

BOT = FakeTelegram.TOKEN.split(":")[0]


def polling_env(smstools: FakeSmstools, telegram: FakeTelegram) -> dict[str, str]:
    environ = env(smstools) | {"TELEGRAM_API_URL": telegram.url, "TELEGRAM_UPDATES": "polling"}
    del environ["TELEGRAM_WEBHOOK_SECRET"]
    return environ


@asynccontextmanager
async def polling_bridge(
    database_url: str, slack: FakeSlack, telegram: FakeTelegram, smstools: FakeSmstools
) -> AsyncIterator[RunningBridge]:
    environ = polling_env(smstools, telegram)
    config = build(copy.deepcopy(CONFIG), "test config", environ)
    async with running_bridge(
        database_url, config, adapters(slack, telegram), run_worker=False, env=environ
    ) as running:
        yield running


async def open_topic(running: RunningBridge, telegram: FakeTelegram) -> int:
    """A WhatsApp customer writes: the bridge opens a forum topic; its id."""
    assert (await running.post([inbox("Hallo", sender=WA_CUSTOMER, kind="whatsapp")])).is_success
    await running.worker.drain()
    return telegram.topics(FORUM)[0].message_thread_id


async def sent_once_confirmed(
    running: RunningBridge, telegram: FakeTelegram, smstools: FakeSmstools, count: int = 1
) -> None:
    """Wait until the poller confirmed every queued update (it asks from past them only once
    they are stored), then deliver: `count` answers reached the fake Smstools."""
    await wait_until(lambda: not telegram.queued_updates(), "the updates confirmed", timeout=15)
    await running.worker.drain()
    assert len(smstools.sent()) == count


async def stored_offset(database_url: str) -> int | None:
    database = Database(normalise_database_url(database_url))
    try:
        async with database.transaction() as connection:
            return await facts_store.telegram_offset(connection, BOT)
    finally:
        await database.close()


async def set_webhook(telegram: FakeTelegram, url: str) -> None:
    async with httpx.AsyncClient() as client:
        answered = await client.post(
            f"{telegram.url}/bot{FakeTelegram.TOKEN}/setWebhook", data={"url": url}
        )
    assert answered.json()["ok"] is True


async def test_an_answer_over_polling_reaches_smstools_once_and_the_offset_is_kept(
    database_url: str, slack: FakeSlack, telegram: FakeTelegram, smstools: FakeSmstools
) -> None:
    await set_webhook(telegram, "https://old.example/telegram/webhook")
    async with polling_bridge(database_url, slack, telegram, smstools) as running:
        topic = await open_topic(running, telegram)
        update = telegram.send_update(
            FakeTelegram.TOKEN, topic_message(telegram, topic, "Goedemiddag!")
        )
        await sent_once_confirmed(running, telegram, smstools)
        assert FakeTelegram.TOKEN not in telegram.webhooks  # deleted before polling
        assert await stored_offset(database_url) == update["update_id"] + 1
    async with polling_bridge(database_url, slack, telegram, smstools) as running:  # restarted
        telegram.send_update(FakeTelegram.TOKEN, topic_message(telegram, topic, "Tot ziens!"))
        await sent_once_confirmed(running, telegram, smstools, 2)
        assert await stored_offset(database_url) == update["update_id"] + 2
    sent = [(s.sender, s.to, s.message) for s in smstools.sent()]
    assert sent == [(LINE, [WA_CUSTOMER], "Goedemiddag!"), (LINE, [WA_CUSTOMER], "Tot ziens!")]
    refused = [c for c in telegram.calls("getUpdates") if c.status != 200]
    assert refused == []  # never while a webhook was set, never a second poller


async def test_a_connection_cut_mid_answer_delivers_the_update_again_and_sends_once(
    sqlite_url: str, slack: FakeSlack, telegram: FakeTelegram, smstools: FakeSmstools
) -> None:
    async with polling_bridge(sqlite_url, slack, telegram, smstools) as running:
        topic = await open_topic(running, telegram)
        telegram.cut_connection()
        telegram.send_update(FakeTelegram.TOKEN, topic_message(telegram, topic, "Goedemiddag!"))
        await sent_once_confirmed(running, telegram, smstools)
        # The same update once more, as after a webhook answer that never reached Telegram.
        later = topic_message(telegram, topic, "Tot ziens!")
        telegram.send_update(FakeTelegram.TOKEN, later)
        await sent_once_confirmed(running, telegram, smstools, 2)
    assert [s.message for s in smstools.sent()] == ["Goedemiddag!", "Tot ziens!"]
    answered = [c.status for c in telegram.calls("getUpdates")]
    assert answered.count(200) >= 3  # the cut answer, its second delivery, the next one


async def test_an_update_the_webhook_stored_is_a_duplicate_when_polling_brings_it(
    sqlite_url: str, slack: FakeSlack, telegram: FakeTelegram, smstools: FakeSmstools
) -> None:
    environ = polling_env(smstools, telegram) | {"TELEGRAM_WEBHOOK_SECRET": TELEGRAM_SECRET}
    config = build(copy.deepcopy(CONFIG), "test config", environ)
    async with running_bridge(
        sqlite_url, config, adapters(slack, telegram), env=environ
    ) as running:
        topic = await open_topic(running, telegram)
        message = topic_message(telegram, topic, "Goedemiddag!")
        telegram.set_next_update_id(FakeTelegram.TOKEN, 700)
        by_webhook = await running.client.post(
            f"/telegram/webhook/{BOT}",
            json={"update_id": 700, "message": message},
            headers={"X-Telegram-Bot-Api-Secret-Token": TELEGRAM_SECRET},
        )
        assert by_webhook.json() == {"ok": True, "duplicate": False}
        telegram.send_update(FakeTelegram.TOKEN, message)  # update 700 again
        await sent_once_confirmed(running, telegram, smstools)
    assert [s.message for s in smstools.sent()] == ["Goedemiddag!"]


async def test_another_poller_s_409_is_waited_out_and_said_once(
    sqlite_url: str,
    slack: FakeSlack,
    telegram: FakeTelegram,
    smstools: FakeSmstools,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="bridge.http.telegram_polling")
    async with polling_bridge(sqlite_url, slack, telegram, smstools) as running:
        topic = await open_topic(running, telegram)
        url = f"{telegram.url}/bot{FakeTelegram.TOKEN}/getUpdates"

        def conflicts() -> int:
            return sum(c.status == 409 for c in telegram.calls("getUpdates"))

        async with httpx.AsyncClient() as client:  # a stray poller for the same bot, twice
            stray = 0  # the number of the stray's last getUpdates
            for times in (1, 2):
                # The bridge's poll in flight: one it began after the stray's, not answered
                # yet. (Requests in flight could still count the one the stray just ended.)
                def polling(after: int = stray) -> bool:
                    begun = telegram.polls(FakeTelegram.TOKEN)
                    return begun > after and len(telegram.calls("getUpdates")) < begun

                await wait_until(polling, "the bridge's poll in flight")
                assert (await client.post(url, data={"timeout": "0"})).status_code == 200
                stray = telegram.polls(FakeTelegram.TOKEN)
                await wait_until(lambda n=times: conflicts() == n, f"409 number {times}")
        telegram.send_update(FakeTelegram.TOKEN, topic_message(telegram, topic, "Goedemiddag!"))
        await sent_once_confirmed(running, telegram, smstools)
    database = Database(normalise_database_url(sqlite_url))
    try:
        async with database.transaction() as connection:
            holder = await holds.holder(connection, hold_name(BOT), time.time())
    finally:
        await database.close()
    assert holder is None  # released on the way out
    said = [r.getMessage() for r in caplog.records if "409" in r.getMessage()]
    assert len(said) == 1, said
