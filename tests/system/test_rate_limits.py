"""Fake Slack and Telegram enforce their documented rate limits; the worker paces itself."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from bridge.chat.slack import SlackAdapter
from bridge.chat.spacing import Spacing
from bridge.chat.telegram import TelegramAdapter
from bridge.config import build
from bridge.delivery.pacing import spacing_for
from testkit.fakes.slack import FakeSlack
from testkit.fakes.telegram import FakeTelegram
from tests.support.harness import running_bridge, wait_until
from tests.support.pipeline_fixtures import ENV, FORUM, LINE_FR, PACED, SLACK_TOKEN, inbox

pytestmark = pytest.mark.slow


@pytest.fixture
def fakes() -> Iterator[tuple[FakeSlack, FakeTelegram]]:
    with FakeSlack() as slack, FakeTelegram() as telegram:
        slack.set_rate_limit(1.0)
        telegram.set_rate_limit(per_chat_per_second=1.0, per_group_per_minute=20)
        yield slack, telegram


async def test_paced_destinations_rarely_hit_429_and_a_busy_channel_holds_no_one_back(
    sqlite_url: str, fakes: tuple[FakeSlack, FakeTelegram]
) -> None:
    slack, telegram = fakes
    config = build(PACED, "rate test", ENV)

    def gate(name: str) -> Spacing | None:  # as destinations.build_adapters gives them
        return spacing_for(config.destinations[name].max_rate)

    adapters = {
        "support": SlackAdapter(
            "support", SLACK_TOKEN, "C0SUPPORT", base_url=slack.api_url, spacing=gate("support")
        ),
        "sales": SlackAdapter(
            "sales", SLACK_TOKEN, "C0SALES", base_url=slack.api_url, spacing=gate("sales")
        ),
        "nl-team": TelegramAdapter(
            "nl-team",
            FakeTelegram.TOKEN,
            FORUM,
            topics=True,
            api_url=telegram.url,
            spacing=gate("nl-team"),
        ),
    }
    busy = [inbox(f"324710000{n:02d}", f"busy {n}") for n in range(10)]
    forum = [inbox(f"324720000{n:02d}", f"forum {n}", kind="whatsapp") for n in range(5)]
    async with running_bridge(sqlite_url, config, adapters) as bridge:
        await bridge.post(busy + forum)
        await wait_until(lambda: len(slack.posts("C0SUPPORT")) >= 1, "the busy backlog started")
        await bridge.post([inbox("32473000000", "quiet", receiver=LINE_FR)])
        await wait_until(lambda: len(slack.posts("C0SALES")) == 1, "the quiet post")
        quiet_done = time.monotonic()
        await wait_until(
            lambda: len(slack.posts("C0SUPPORT")) == 10 and len(telegram.messages(FORUM)) == 5,
            "every busy post",
            timeout=40,
        )
    busy_posts = slack.posts("C0SUPPORT")
    assert busy_posts[-1].at - slack.posts("C0SALES")[0].at > 5  # quiet one did not queue behind
    assert quiet_done - busy_posts[0].at < 5
    throttled = [c for c in slack.calls("chat.postMessage") if c.status == 429]
    throttled += [c for c in telegram.calls("sendMessage") if c.status == 429]
    sent = len(busy_posts) + len(telegram.messages(FORUM)) + 1
    print(f"\n{sent} posts under enforced limits, {len(throttled)} answered 429")
    assert len(throttled) <= 2
