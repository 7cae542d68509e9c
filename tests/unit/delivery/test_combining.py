"""Which messages one post may show: the pure decisions of combining."""

from __future__ import annotations

from typing import Any

import pytest

from bridge.chat.console import ConsoleAdapter
from bridge.chat.slack import SlackAdapter
from bridge.chat.telegram import TelegramAdapter
from bridge.config import ConfigError
from bridge.delivery import combining, render
from testkit.fakes.telegram import FakeTelegram
from tests.support.pipeline_fixtures import FORUM, paced_config, parsed_inbox


def test_a_gap_longer_than_idle_after_ends_what_one_post_may_show() -> None:
    assert combining.one_conversation([0, 10, 20], idle_after=10) == 3  # 10 is not longer
    assert combining.one_conversation([0, 10, 21], idle_after=10) == 2
    assert combining.one_conversation([0, 11], idle_after=10) == 1
    assert combining.one_conversation([5, 3, 14], idle_after=10) == 3  # from the latest, 5
    assert combining.one_conversation([], idle_after=10) == 0


def test_as_many_messages_as_fit_and_no_more() -> None:
    assert combining.most_that_fit(10, lambda n: n <= 7) == 7
    assert combining.most_that_fit(10, lambda n: True) == 10
    assert combining.most_that_fit(10, lambda n: n == 1) == 1  # the first alone
    assert combining.most_that_fit(1, lambda n: False) == 1


def test_each_message_of_a_combined_post_has_its_own_time_line_in_order_on_every_platform() -> None:
    config = paced_config()
    post = render.combined_post(
        parsed_inbox("Hello", "<!channel> is it <b>coming</b>?", "@everyone /start"),
        config,
        opens_thread=True,
    )
    slack_part, *more = SlackAdapter("support", "xoxb-test", "C0SUPPORT").render(post)
    assert more == []
    blocks: Any = slack_part.extra["blocks"]
    assert [block["type"] for block in blocks] == [
        "section",  # who wrote
        "context",  # to which line, SMS, the full time
        "rich_text",
        "context",
        "rich_text",
        "context",
        "rich_text",
    ]
    assert [b["elements"][-1]["text"] for b in blocks if b["type"] == "context"] == [
        "<!date^1795680600^{date_short_pretty} {time}|2026-11-26 09:10:00 (Europe/Brussels)>",
        "SMS · 09:11",
        "SMS · 09:12",
    ]
    words = [b["elements"][0]["elements"][0]["text"] for b in blocks if b["type"] == "rich_text"]
    assert words == ["Hello", "<!channel> is it <b>coming</b>?", "@everyone /start"]
    # The customer's words first (a push preview shows them), then who and where.
    assert slack_part.text.split("\n") == [
        "Hello",
        "SMS · 09:11",
        "&lt;!channel&gt; is it &lt;b&gt;coming&lt;/b&gt;?",  # escaped as ever
        "SMS · 09:12",
        "@everyone /start",
        "+32 470 00 00 01",
        "to Support line (+32 460 20 00 00) · SMS · 2026-11-26 09:10:00 (Europe/Brussels)",
    ]

    (telegram_part,) = TelegramAdapter("nl-team", FakeTelegram.TOKEN, FORUM, True).render(post)
    # In a topic, whose name says who and where, only the gateway's time comes first.
    assert telegram_part.text.split("\n") == [
        "<i>2026-11-26 09:10:00 (Europe/Brussels)</i>",
        "Hello",
        "<i>SMS · 09:11</i>",
        "&lt;!channel&gt; is it &lt;b&gt;coming&lt;/\u2060b&gt;?",
        "<i>SMS · 09:12</i>",
        "@\u2060everyone /\u2060start",  # no mention, no command
    ]

    (console_part,) = ConsoleAdapter("console").render(post)
    assert console_part.text == "\n".join(
        [
            "+32 470 00 00 01",
            "  to Support line (+32 460 20 00 00) · SMS · 2026-11-26 09:10:00 (Europe/Brussels)",
            "Hello",
            "  SMS · 09:11",
            "<!channel> is it <b>coming</b>?",
            "  SMS · 09:12",
            "@everyone /start",
        ]
    )


def test_combine_is_on_by_default_and_can_be_turned_off_per_destination() -> None:
    config = paced_config(sales={"combine": False})
    assert config.destinations["support"].combine is True
    assert config.destinations["sales"].combine is False
    assert config.destinations["sales"].describe() == (
        "slack channel C0SALES, one post per message even when behind"
    )
    assert config.destinations["support"].describe() == "slack channel C0SUPPORT"
    with pytest.raises(ConfigError) as refused:
        paced_config(sales={"combine": "sometimes"})
    assert refused.value.problems == [
        "combine test: destinations.sales.combine: write true or false"
    ]
