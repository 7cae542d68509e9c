"""The Smstools credit: a low balance tells on-call once, not again within repeat_interval,
a rise says resolved, and an API error is logged once and never stops delivery."""

from __future__ import annotations

import logging

import pytest

from testkit.fakes.slack import FakeSlack
from testkit.fakes.smstools import FakeSmstools
from testkit.fakes.telegram import FakeTelegram
from tests.support.alert_fixtures import adapters, make_config
from tests.support.harness import Clock, running_bridge
from tests.support.metrics_fixtures import check_credit, scrape, value, watching_credit
from tests.support.pipeline_fixtures import inbox

INTERVAL = 15 * 60


def credit_posts(slack: FakeSlack) -> list[str]:
    return [post.text or "" for post in slack.posts("C0ONCALL") if "credit" in (post.text or "")]


async def test_a_low_balance_tells_on_call_once_then_resolved(
    database_url: str, slack: FakeSlack, telegram: FakeTelegram, smstools: FakeSmstools
) -> None:
    clock = Clock()
    config = make_config(low_balance=100)
    async with watching_credit(database_url, config, slack, telegram, smstools, clock) as bridge:
        await check_credit(bridge, clock, 0)
        assert credit_posts(slack) == []  # 123.45 EUR: fine
        smstools.set_balance(42.5)
        await check_credit(bridge, clock, 60)
        assert len(smstools.calls("/balance")) == 1  # asked once per interval
        await check_credit(bridge, clock, INTERVAL - 60)
        (low,) = credit_posts(slack)
        assert "Smstools credit is low: 42.5 EUR" in low
        assert "<!subteam^S0ONCALL>" in low
        for _ in range(3):  # still low, within repeat_interval (4h): nothing more
            await check_credit(bridge, clock, INTERVAL)
        assert len(credit_posts(slack)) == 1
        assert len(smstools.calls("/balance")) == 5
        samples = await scrape(bridge)
        assert value(samples, "smstools_balance") == 42.5
        smstools.set_balance(500)
        await check_credit(bridge, clock, INTERVAL)
        # The alert, edited, says so; the reply under it pages with what is over.
        assert "Smstools credit is back above 100" in (slack.edits("C0ONCALL")[-1].text or "")
        assert "Resolved " in credit_posts(slack)[-1]
        assert "credit is back above 100" in credit_posts(slack)[-1]
        await check_credit(bridge, clock, INTERVAL)
        assert len(credit_posts(slack)) == 2
        assert value(await scrape(bridge), "smstools_balance") == 500


async def test_still_low_after_repeat_interval_tells_again(
    sqlite_url: str, slack: FakeSlack, telegram: FakeTelegram, smstools: FakeSmstools
) -> None:
    clock = Clock()
    smstools.set_balance(5)
    async with watching_credit(
        sqlite_url,
        make_config(low_balance=100, repeat_interval="1h"),
        slack,
        telegram,
        smstools,
        clock,
    ) as bridge:
        await check_credit(bridge, clock, 0)
        for _ in range(3):
            await check_credit(bridge, clock, INTERVAL)
        assert len(credit_posts(slack)) == 1
        await check_credit(bridge, clock, INTERVAL)  # one hour since the first
    assert len(credit_posts(slack)) == 2


async def test_an_api_error_is_logged_once_and_delivery_goes_on(
    sqlite_url: str,
    slack: FakeSlack,
    telegram: FakeTelegram,
    smstools: FakeSmstools,
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    smstools.set_down()
    async with watching_credit(
        sqlite_url, make_config(low_balance=100), slack, telegram, smstools, clock
    ) as bridge:
        with caplog.at_level(logging.WARNING, logger="bridge.ops.credit"):
            for _ in range(3):
                await check_credit(bridge, clock, INTERVAL)
        assert len(smstools.calls("/balance")) == 3
        problems = [r for r in caplog.records if r.name == "bridge.ops.credit"]
        assert len(problems) == 1
        assert "cannot read the Smstools balance (server)" in problems[0].getMessage()
        assert (await bridge.post([inbox("32470111111", "hello")])).status_code == 200
        await bridge.worker.drain()
        assert len(slack.posts("C0SUPPORT")) == 1
        samples = await scrape(bridge)
        assert value(samples, "smstools_balance_checks_total", outcome="server") == 3
        assert credit_posts(slack) == []


async def test_no_credentials_no_balance_check(
    sqlite_url: str, slack: FakeSlack, telegram: FakeTelegram
) -> None:
    async with running_bridge(
        sqlite_url, make_config(low_balance=100), adapters(slack, telegram), run_worker=False
    ) as bridge:
        assert bridge.app.state.credit is None
