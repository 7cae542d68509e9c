"""A chat API outage: Slack or Telegram answers 503, or refuses connections, for 60 s while 500
events arrive. Afterwards every message is posted exactly once, each conversation in order,
with no manual action: the worker's own retries catch up."""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import func, select

from bridge.chat.base import ChatAdapter
from bridge.chat.slack import SlackAdapter
from bridge.chat.telegram import TelegramAdapter
from bridge.store.schema import outbox
from testkit.fakes.slack import FakeSlack
from testkit.fakes.telegram import FakeTelegram
from tests.support.harness import Clock, running_bridge
from tests.support.pipeline_fixtures import FORUM, SLACK_TOKEN, inbox, make_config, rows

CUSTOMERS = 25
PER_CUSTOMER = 20  # 500 events
BODIES = 50  # of 10 events each, one every 1.2 s of the 60 s outage


class Switchboard:
    """A loopback TCP forwarder that can go down: while down, connections are refused (the
    port is closed) and open ones are cut, like a host that fell over."""

    def __init__(self, target_url: str) -> None:
        self.target_port = int(target_url.rsplit(":", 1)[1].split("/")[0])
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._pipes: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def up(self) -> None:
        self._server = await asyncio.start_server(self._connect, "127.0.0.1", self.port)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def down(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for writer in list(self._writers):
            writer.close()
        await asyncio.gather(*self._pipes, return_exceptions=True)

    async def _connect(
        self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter
    ) -> None:
        server_r, server_w = await asyncio.open_connection("127.0.0.1", self.target_port)
        self._writers |= {client_w, server_w}
        pipes = [
            asyncio.create_task(self._copy(client_r, server_w)),
            asyncio.create_task(self._copy(server_r, client_w)),
        ]
        self._pipes.update(pipes)
        await asyncio.gather(*pipes, return_exceptions=True)
        self._pipes.difference_update(pipes)
        for writer in (client_w, server_w):
            self._writers.discard(writer)
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    @staticmethod
    async def _copy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, ConnectionError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()


@pytest.fixture
async def switchboards(
    slack: FakeSlack, telegram: FakeTelegram
) -> AsyncIterator[dict[str, Switchboard]]:
    boards = {"slack": Switchboard(slack.url), "telegram": Switchboard(telegram.url)}
    for board in boards.values():
        await board.up()
    yield boards
    for board in boards.values():
        await board.down()


def chat_adapters(boards: dict[str, Switchboard]) -> dict[str, ChatAdapter]:
    slack_url = boards["slack"].url + "/api/"
    return {
        "support": SlackAdapter("support", SLACK_TOKEN, "C0SUPPORT", base_url=slack_url),
        "sales": SlackAdapter("sales", SLACK_TOKEN, "C0SALES", base_url=slack_url),
        "nl-team": TelegramAdapter(
            "nl-team",
            FakeTelegram.TOKEN,
            FORUM,
            topics=True,
            api_url=boards["telegram"].url,
            timeout=2.0,
        ),
    }


def delivered(platform: str, slack: FakeSlack, telegram: FakeTelegram) -> list[tuple[str, str]]:
    """(thread, last line) of every accepted post, in arrival order."""
    if platform == "slack":
        return [
            (p.thread_ts or p.ts, (p.text or "").split("\n")[0]) for p in slack.posts("C0SUPPORT")
        ]
    return [
        (str(m.message_thread_id), m.plain_text.split("\n")[-1]) for m in telegram.messages(FORUM)
    ]


@pytest.mark.parametrize(
    ("platform", "failure"),
    [("slack", "503"), ("slack", "refused"), ("telegram", "503"), ("telegram", "refused")],
)
async def test_after_a_60_s_outage_during_500_events_each_is_posted_once_in_order(
    sqlite_url: str,
    slack: FakeSlack,
    telegram: FakeTelegram,
    switchboards: dict[str, Switchboard],
    platform: str,
    failure: str,
) -> None:
    clock = Clock()
    kind = "sms" if platform == "slack" else "whatsapp"  # sms → Slack, WhatsApp → Telegram
    customers = [f"3247{n:07d}" for n in range(CUSTOMERS)]
    events = [
        inbox(customers[n % CUSTOMERS], f"{customers[n % CUSTOMERS]}:{n // CUSTOMERS}", kind=kind)
        for n in range(CUSTOMERS * PER_CUSTOMER)
    ]
    fake = slack if platform == "slack" else telegram
    async with running_bridge(
        sqlite_url, make_config(), chat_adapters(switchboards), run_worker=False, now=clock
    ) as bridge:
        outage_began = clock()
        if failure == "503":
            fake.set_down(status=503)
        else:
            await switchboards[platform].down()
        size = len(events) // BODIES
        for start in range(0, len(events), size):
            response = await bridge.post(events[start : start + size])
            assert response.status_code == 200 and response.json() == {"received": size}
            await bridge.worker.drain()  # every lane's head fails and is scheduled again
            clock.advance(60 / BODIES)
        assert delivered(platform, slack, telegram) == []
        assert clock() - outage_began == pytest.approx(60)
        if failure == "503":
            fake.reset()
        else:
            await switchboards[platform].up()
        recovered_at = clock()
        while len(delivered(platform, slack, telegram)) < len(events):
            assert clock() - recovered_at < 15 * 60, "not caught up 15 minutes after the outage"
            clock.advance(10)
            await bridge.worker.drain()

    posts = delivered(platform, slack, telegram)
    assert sorted(text for _, text in posts) == sorted(e["message"]["content"] for e in events)
    threads: dict[str, list[str]] = defaultdict(list)
    for thread, text in posts:
        threads[thread].append(text)
    assert len(threads) == CUSTOMERS  # one thread per conversation, none doubled
    for texts in threads.values():
        customer = texts[0].split(":")[0]
        assert texts == [f"{customer}:{n}" for n in range(PER_CUSTOMER)]
    statuses = await rows(
        sqlite_url,
        select(outbox.c.status, func.count(), func.max(outbox.c.attempts)).group_by(
            outbox.c.status
        ),
    )
    assert [(status, count) for status, count, _ in statuses] == [("done", len(events))]
    assert statuses[0][2] >= 3  # the heads were tried during the outage, then delivered
