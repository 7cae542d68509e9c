"""Agents answer over Slack Socket Mode, in-process: the fake Web API's apps.connections.open →
the fake WebSocket → envelope stored as `/slack/events` stores it → acknowledged → worker →
fake Smstools. The connection is refreshed, dropped and disabled; one holder at a time."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

import pytest
from pydantic import SecretStr
from sqlalchemy import select

from bridge.http import slack_socket
from bridge.http.slack_socket import Holding, SlackSocket
from bridge.settings import normalise_database_url
from bridge.store import holds
from bridge.store.db import Database
from bridge.store.migrations import migrate
from bridge.store.schema import chat_events
from testkit.fakes.slack import FakeSlack
from testkit.fakes.slack_socket import FakeSocketMode
from testkit.fakes.smstools import FakeSmstools
from testkit.fakes.telegram import FakeTelegram
from tests.support.harness import wait_until
from tests.support.reply_fixtures import (
    Bridge,
    bridge_for,
    env,
    make_config,
    slack_event,
    thread_of_customer,
)


@pytest.fixture
def socket_mode(slack: FakeSlack) -> Iterator[FakeSocketMode]:
    with FakeSocketMode() as fake:
        slack.socket_mode = fake
        yield fake
    slack.socket_mode = None


@asynccontextmanager
async def socket_bridge(
    database_url: str,
    slack: FakeSlack,
    telegram: FakeTelegram,
    smstools: FakeSmstools,
    app_token: str = FakeSlack.APP_TOKEN,
) -> AsyncIterator[Bridge]:
    """The bridge with SLACK_APP_TOKEN and no signing secret: Slack events come over Socket
    Mode only."""
    environ = env(smstools) | {"SLACK_APP_TOKEN": app_token, "SLACK_API_URL": slack.api_url}
    del environ["SLACK_SIGNING_SECRET"]
    async with bridge_for(database_url, slack, telegram, smstools, environ=environ) as bridge:
        yield bridge


@asynccontextmanager
async def connected(
    database_url: str,
    slack: FakeSlack,
    telegram: FakeTelegram,
    smstools: FakeSmstools,
    socket_mode: FakeSocketMode,
) -> AsyncIterator[tuple[Bridge, str]]:
    """`socket_bridge` once its Socket Mode connection is open, and a customer's thread."""
    async with socket_bridge(database_url, slack, telegram, smstools) as bridge:
        await wait_until(lambda: socket_mode.open_connections() == 1, "a connection")
        yield bridge, await thread_of_customer(bridge, slack)


async def stored_events(database_url: str) -> int:
    database = Database(normalise_database_url(database_url))
    try:
        async with database.transaction() as connection:
            return len((await connection.execute(select(chat_events.c.id))).all())
    finally:
        await database.close()


async def test_an_answer_over_socket_mode_is_sent_once_and_every_envelope_is_acknowledged(
    sqlite_url: str,
    slack: FakeSlack,
    telegram: FakeTelegram,
    smstools: FakeSmstools,
    socket_mode: FakeSocketMode,
) -> None:
    async with connected(sqlite_url, slack, telegram, smstools, socket_mode) as (bridge, thread):
        ts = slack.post_as_member("C0SUPPORT")
        answer = slack_event("It left *today*", thread, ts)
        note = slack_event("note: customer is VIP", thread, slack.post_as_member("C0SUPPORT"))
        sent = [socket_mode.send_event(answer), socket_mode.send_event(note)]
        await wait_until(lambda: set(sent) <= set(socket_mode.acks()), "both acknowledged")
        await bridge.drain()

        assert [message.message for message in smstools.sent()] == ["It left today"]
        assert [r.name for r in slack.reactions("C0SUPPORT") if r.ts == ts] == ["ok_hand"]
        assert socket_mode.acks() == sent
        # Without SLACK_SIGNING_SECRET, the HTTP edge stays shut.
        assert (await bridge.slack(answer)).status_code == 404


async def test_an_answer_delivered_again_after_a_dropped_connection_is_sent_once(
    sqlite_url: str,
    slack: FakeSlack,
    telegram: FakeTelegram,
    smstools: FakeSmstools,
    socket_mode: FakeSocketMode,
) -> None:
    async with connected(sqlite_url, slack, telegram, smstools, socket_mode) as (bridge, thread):
        before = await stored_events(sqlite_url)
        answer = slack_event("Tracking: 123", thread, slack.post_as_member("C0SUPPORT"))
        socket_mode.send_event(answer)
        await wait_until(
            lambda: _more_stored(sqlite_url, before), "the first delivery stored", timeout=10
        )
        socket_mode.drop()  # the network fails: Slack never saw an acknowledgement
        await wait_until(
            lambda: socket_mode.connections_opened() == 2 and socket_mode.open_connections() == 1,
            "a new connection",
            timeout=20,
        )
        again = socket_mode.send_event(answer, retry_attempt=1)  # same event_id
        await wait_until(lambda: again in socket_mode.acks(), "the redelivery acknowledged")
        await bridge.drain()

        assert [message.message for message in smstools.sent()] == ["Tracking: 123"]
        assert await stored_events(sqlite_url) == before + 1


async def _more_stored(database_url: str, before: int) -> bool:
    return await stored_events(database_url) > before


async def test_a_refresh_requested_moves_to_a_new_connection_without_losing_an_answer(
    sqlite_url: str,
    slack: FakeSlack,
    telegram: FakeTelegram,
    smstools: FakeSmstools,
    socket_mode: FakeSocketMode,
) -> None:
    async with connected(sqlite_url, slack, telegram, smstools, socket_mode) as (bridge, thread):
        socket_mode.disconnect("refresh_requested")
        await wait_until(
            lambda: socket_mode.connections_opened() == 2 and socket_mode.open_connections() == 1,
            "the old connection replaced by a new one",
        )
        yes = slack_event("Yes", thread, slack.post_as_member("C0SUPPORT"))
        sent = socket_mode.send_event(yes)
        await wait_until(lambda: sent in socket_mode.acks(), "acknowledged on the new connection")
        await bridge.drain()
        assert [message.message for message in smstools.sent()] == ["Yes"]
        assert len(slack.calls("apps.connections.open")) == 2  # a fresh URL each time


async def test_link_disabled_closes_the_connection_and_it_is_tried_again_after_a_pause(
    sqlite_url: str,
    slack: FakeSlack,
    telegram: FakeTelegram,
    smstools: FakeSmstools,
    socket_mode: FakeSocketMode,
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with socket_bridge(sqlite_url, slack, telegram, smstools):
        await wait_until(lambda: socket_mode.open_connections() == 1, "a connection")
        socket_mode.disconnect("link_disabled")
        await wait_until(lambda: socket_mode.open_connections() == 0, "the connection closed")
        assert socket_mode.connections_opened() == 1  # not at once: Socket Mode is off
        pause = slack_socket.FIRST_RETRY + 5
        await wait_until(lambda: socket_mode.open_connections() == 1, "again", timeout=pause)
    assert "turn Socket Mode on in the Slack app's settings" in caplog.text


async def test_a_refused_app_token_is_said_with_its_fix_and_the_bridge_keeps_serving(
    sqlite_url: str,
    slack: FakeSlack,
    telegram: FakeTelegram,
    smstools: FakeSmstools,
    socket_mode: FakeSocketMode,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.ERROR, logger="bridge.http.slack_socket")
    revoked = "xapp-revoked"
    async with socket_bridge(sqlite_url, slack, telegram, smstools, revoked) as bridge:
        await wait_until(
            lambda: "Slack refused SLACK_APP_TOKEN (invalid_auth)" in caplog.text, "the error"
        )
        assert "App-Level Tokens" in caplog.text and revoked not in caplog.text
        assert socket_mode.connections_opened() == 0
        await thread_of_customer(bridge, slack)  # the rest of the bridge works on


async def test_one_holder_connects_and_another_takes_over_once_it_stops(
    database: Database,
    slack: FakeSlack,
    smstools: FakeSmstools,
    socket_mode: FakeSocketMode,
) -> None:
    await migrate(database)
    config = make_config(smstools)

    def receiver(holder: str) -> SlackSocket:
        return SlackSocket(
            database,
            config,
            SecretStr(FakeSlack.APP_TOKEN),
            slack.api_url,
            lambda: None,
            holding=Holding(holder=holder, renew_every=0.1, ttl=1.0),
        )

    receivers = [receiver("web.1"), receiver("worker.1")]
    running = [asyncio.create_task(r.run()) for r in receivers]

    def holding() -> list[int]:
        return [n for n, r in enumerate(receivers) if r.connected.is_set()]

    try:
        await wait_until(lambda: len(holding()) == 1, "one connection")
        await asyncio.sleep(0.5)  # several renewals: the other still waits
        assert len(holding()) == 1 and socket_mode.open_connections() == 1

        # Someone else holds it now (as if the holder's renewals had failed for too long): the
        # holder closes its socket at once, well before the new hold could run out.
        async with database.transaction() as connection:
            await holds.release(
                connection, slack_socket.HOLD, receivers[holding()[0]].holding.holder
            )
            assert await holds.take(
                database, connection, slack_socket.HOLD, "intruder", now=time.time(), ttl=1.0
            )
        await wait_until(lambda: socket_mode.open_connections() == 0, "closed", timeout=0.9)

        # The intruder never renews: one of the two connects once its hold runs out.
        await wait_until(lambda: len(holding()) == 1, "connected again")
        stopped = holding()[0]
        running[stopped].cancel()  # a clean stop gives the hold up: the other connects
        await asyncio.gather(running[stopped], return_exceptions=True)
        await wait_until(lambda: holding() == [1 - stopped], "taken over", timeout=2)
        assert socket_mode.open_connections() == 1
    finally:
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)


async def test_an_envelope_whose_event_cannot_be_stored_is_not_acknowledged(
    sqlite_url: str,
    slack: FakeSlack,
    telegram: FakeTelegram,
    smstools: FakeSmstools,
    socket_mode: FakeSocketMode,
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def rename(old: str, new: str) -> None:
        database = Database(normalise_database_url(sqlite_url))
        try:
            async with database.transaction() as connection:
                await connection.exec_driver_sql(f"ALTER TABLE {old} RENAME TO {new}")
        finally:
            await database.close()

    async with connected(sqlite_url, slack, telegram, smstools, socket_mode) as (bridge, thread):
        answer = slack_event("Sorry for the wait", thread, slack.post_as_member("C0SUPPORT"))
        await rename("chat_events", "chat_events_away")  # the store fails, the hold is kept
        lost = socket_mode.send_event(answer)
        await wait_until(lambda: "could not store a Slack event" in caplog.text, "the failure")
        await rename("chat_events_away", "chat_events")
        again = socket_mode.send_event(answer, retry_attempt=1)  # Slack's retry, no ack seen
        await wait_until(lambda: again in socket_mode.acks(), "the retry acknowledged")
        await bridge.drain()
        assert lost not in socket_mode.acks()
        assert [message.message for message in smstools.sent()] == ["Sorry for the wait"]


async def test_a_connection_that_will_not_come_back_is_started_over_with_a_fresh_url(
    sqlite_url: str, slack: FakeSlack, smstools: FakeSmstools, socket_mode: FakeSocketMode
) -> None:
    database = Database(normalise_database_url(sqlite_url))
    await migrate(database)
    receiver = SlackSocket(
        database,
        make_config(smstools),
        SecretStr(FakeSlack.APP_TOKEN),
        slack.api_url,
        lambda: None,
        holding=Holding(ping_interval=0.3, down_for_at_most=1.5, rand=lambda: 0.0),
    )
    running = asyncio.create_task(receiver.run())
    try:
        await wait_until(receiver.connected.is_set, "connected")
        socket_mode.refuse()  # slack-sdk would now try one used-up URL for ever
        socket_mode.drop()
        await wait_until(lambda: not receiver.connected.is_set(), "noticed", timeout=3)
        await asyncio.sleep(2.5)  # past down_for_at_most: a fresh client, fresh URLs
        socket_mode.refuse(False)
        await wait_until(receiver.connected.is_set, "connected again", timeout=10)
        assert socket_mode.open_connections() == 1
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
        await database.close()
