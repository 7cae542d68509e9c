"""A slow or stuck chat API: timeouts bound every call; the webhook keeps answering fast."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator

import pytest
from sqlalchemy import select

from bridge.chat.base import ChatAdapter
from bridge.chat.slack import SlackAdapter
from bridge.chat.telegram import TelegramAdapter
from bridge.store.schema import outbox
from testkit.fakes.slack import FakeSlack
from testkit.fakes.telegram import FakeTelegram
from tests.support.harness import running_bridge, wait_until
from tests.support.pipeline_fixtures import FORUM, SLACK_TOKEN, inbox, make_config, rows

pytestmark = pytest.mark.slow


@pytest.fixture
def black_hole() -> Iterator[str]:
    """A server that accepts connections and never answers (a half-open peer)."""
    listener = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    stop.set()
    thread.join()
    for connection in accepted:
        connection.close()
    listener.close()


@pytest.mark.usefixtures("settled_heap")
async def test_stuck_apis_time_out_while_the_webhook_answers_in_milliseconds(
    sqlite_url: str, black_hole: str
) -> None:
    with FakeSlack() as slack:
        slack.set_slow(30)
        adapters: dict[str, ChatAdapter] = {
            "support": SlackAdapter(
                "support", SLACK_TOKEN, "C0SUPPORT", base_url=slack.api_url, timeout=1.0
            ),
            "nl-team": TelegramAdapter(
                "nl-team", FakeTelegram.TOKEN, FORUM, topics=True, api_url=black_hole, timeout=1.0
            ),
            "sales": SlackAdapter(
                "sales", SLACK_TOKEN, "C0SALES", base_url=black_hole + "/api/", timeout=1.0
            ),
        }
        async with running_bridge(sqlite_url, make_config(), adapters) as bridge:
            await bridge.post(
                [inbox("32471111111", "stuck"), inbox("32472222222", "w", kind="whatsapp")]
            )
            latencies = []
            for n in range(20):
                started = time.perf_counter()
                response = await bridge.post([inbox(f"324733333{n:02d}", "meanwhile")])
                latencies.append(time.perf_counter() - started)
                assert response.status_code == 200
                await asyncio.sleep(0.1)  # webhooks keep coming while the APIs hang

            async def timeouts_recorded() -> list[str]:
                errors = await rows(sqlite_url, select(outbox.c.last_error))
                return [e for (e,) in errors if e and e.startswith("timeout")]

            async def both_timed_out() -> bool:
                return len(await timeouts_recorded()) >= 2

            await wait_until(both_timed_out, "timed-out attempts recorded")
        timeouts = await timeouts_recorded()
    print(
        f"\nwebhook p100 {max(latencies) * 1000:.1f} ms while the chat APIs hung; "
        f"{len(timeouts)} timed-out attempts recorded"
    )
    assert max(latencies) < 0.5
    assert len(timeouts) >= 2  # the slow Slack channel and the black-holed Telegram both
