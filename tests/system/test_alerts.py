"""Delivery failures → grouped on-call alerts, end to end through fake Slack and Telegram.

Time is an injected clock: group_wait and group_interval pass by `clock.advance`, never sleep.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import select

from bridge.config import Config
from bridge.store.schema import alert_groups, outbox
from testkit.fakes.slack import FakeSlack
from testkit.fakes.telegram import FakeTelegram
from tests.support.alert_fixtures import (
    ONCALL_CHAT,
    adapters,
    make_config,
    report,
)
from tests.support.harness import Clock, RunningBridge, running_bridge
from tests.support.pipeline_fixtures import rows


def posting(**alerts: Any) -> Config:
    """The test config with `lone_failures: post`: these tests are about how alerts are
    posted and edited, lone per-recipient groups included (by default those are only noted
    in the customer's thread: tests/system/test_incidents.py)."""
    return make_config(lone_failures="post", **alerts)


def texts(slack: FakeSlack, channel: str) -> list[str]:
    return [post.text or "" for post in slack.posts(channel)]


async def deliver(bridge: RunningBridge, clock: Clock, seconds: float) -> None:
    clock.advance(seconds)
    await bridge.worker.drain()


async def test_one_failure_is_one_alert_after_group_wait(
    database_url: str, slack: FakeSlack, telegram: FakeTelegram
) -> None:
    clock = Clock()
    async with running_bridge(
        database_url, posting(), adapters(slack, telegram), run_worker=False, now=clock
    ) as bridge:
        await bridge.post([report(2, 10, sender="32460200000")])
        await deliver(bridge, clock, 29)
        assert slack.posts("C0ONCALL") == []  # still gathering the first batch
        await deliver(bridge, clock, 1)
    (alert,) = texts(slack, "C0ONCALL")
    assert "<!" not in alert  # a lone per-recipient failure pages no one...
    assert ":red_circle:" not in alert  # ...and is not shown as an emergency
    for shown in (
        "Not delivered: 1 message from +32 460 20 00 00 not sent",
        "Why: the receiver's number is invalid or unknown (not delivered, code 2, detail 10)",
        "Do: check the number with the customer",
        "Receivers:\n+32 470 99 98 88",
        "first 2027-01-15",
        "last 2027-01-15",
    ):
        assert shown in alert
    assert slack.posts("C0BILLING") == []


async def test_a_lone_2_11_failure_carries_no_mention_while_2000_does(
    database_url: str, slack: FakeSlack, telegram: FakeTelegram
) -> None:
    clock = Clock()
    config = posting(routes=[], group_wait="0s")
    async with running_bridge(
        database_url, config, adapters(slack, telegram), run_worker=False, now=clock
    ) as bridge:
        await bridge.post([report(2, 11)])
        await bridge.worker.drain()
        await bridge.post([report(5, 2000, sender="Shop")])
        await deliver(bridge, clock, 2)
    lone, funds = texts(slack, "C0ONCALL")
    assert lone.startswith("Not delivered: 1 message from Clinic not sent")
    assert funds.startswith("<!subteam^S0ONCALL> :red_circle: Out of credit: 1 message from Shop")
    assert "(rejected, code 5, detail 2000 INSUFFICIENT_FUNDS)" in funds
    assert "Do: top up the Smstools credit" in funds


async def test_more_per_recipient_failures_than_page_above_page_someone(
    database_url: str, slack: FakeSlack, telegram: FakeTelegram
) -> None:
    clock = Clock()
    config = posting(routes=[], page_above=3)
    async with running_bridge(
        database_url, config, adapters(slack, telegram), run_worker=False, now=clock
    ) as bridge:
        await bridge.post([report(2, 11, receiver=f"3247000000{n}") for n in range(3)])
        await deliver(bridge, clock, 30)
        await bridge.post([report(2, 11, receiver="32470000009")])
        await deliver(bridge, clock, 300)
    (alert,) = slack.posts("C0ONCALL")
    (edit,) = slack.edits("C0ONCALL")
    assert alert.text is not None and not alert.text.startswith("<!")
    assert edit.text is not None and edit.text.startswith("<!subteam^S0ONCALL> ")
    assert "4 messages from Clinic not sent" in edit.text


async def test_a_quiet_paged_group_is_edited_to_say_so_keeping_why_and_do(
    database_url: str, slack: FakeSlack, telegram: FakeTelegram
) -> None:
    clock = Clock()
    config = posting(routes=[], resolve_after=None, page_above=3, to=["oncall", "tg-oncall"])
    async with running_bridge(
        database_url, config, adapters(slack, telegram), run_worker=False, now=clock
    ) as bridge:
        await bridge.post([report(2, 12, receiver=f"3247000000{n}") for n in range(4)])
        await deliver(bridge, clock, 30)
        await bridge.post([report(2, 12, receiver="32470000009")])  # at 0:30
        await deliver(bridge, clock, 299)
        assert slack.edits("C0ONCALL") == []
        await deliver(bridge, clock, 1)  # 5:30: told of the fifth, quiet since 0:30...
        await deliver(bridge, clock, 300)  # ...for group_interval (5m) by 5:30 + 0:00
        await deliver(bridge, clock, 3600)
    (alert,) = slack.posts("C0ONCALL")
    grown, quiet = slack.edits("C0ONCALL")
    assert grown.text is not None and "5 messages from Clinic not sent" in grown.text
    assert quiet.ts == alert.ts and quiet.text is not None
    # Not red (nothing is failing now), not green (the five were never sent).
    assert quiet.text.startswith("<!subteam^S0ONCALL> Not delivered: 5 messages from Clinic")
    assert "no new failures since " in quiet.text
    assert "Do: nothing unless it lasts" in quiet.text and "Receivers:" in quiet.text
    assert ":large_green_circle:" not in quiet.text and ":red_circle:" not in quiet.text
    (message,) = telegram.messages(ONCALL_CHAT)
    *_, telegram_quiet = telegram.edits(ONCALL_CHAT)
    assert telegram_quiet.message_id == message.message_id
    assert telegram_quiet.plain_text.startswith("@oncall_team Not delivered: 5 messages")
    jobs = await rows(database_url, select(outbox.c.kind, outbox.c.status))
    assert {status for kind, status in jobs if kind == "alert"} == {"done"}


async def test_a_failure_after_the_quiet_edit_posts_a_new_alert(
    database_url: str, slack: FakeSlack, telegram: FakeTelegram
) -> None:
    clock = Clock()
    config = posting(routes=[], resolve_after="10m", page_above=0)
    async with running_bridge(
        database_url, config, adapters(slack, telegram), run_worker=False, now=clock
    ) as bridge:
        await bridge.post([report(2, 11)])
        await deliver(bridge, clock, 30)
        await deliver(bridge, clock, 570)  # ten minutes after the failure: over
        await bridge.post([report(2, 11, receiver="32470000009")])
        await deliver(bridge, clock, 300)
    first, second = texts(slack, "C0ONCALL")
    (quiet,) = slack.edits("C0ONCALL")
    assert quiet.text is not None and "no new failures since" in quiet.text
    assert "1 message from Clinic not sent" in first
    assert "2 messages from Clinic not sent" in second


async def test_two_hundred_failures_in_one_group_give_one_alert_that_says_200(
    database_url: str, slack: FakeSlack, telegram: FakeTelegram
) -> None:
    clock = Clock()
    config = posting(routes=[], group_wait="2s")
    failures = [report(5, 2000, receiver=f"324709{n:05d}") for n in range(200)]
    delivered = [report(1, receiver=f"324708{n:05d}") for n in range(50)]
    async with running_bridge(
        database_url, config, adapters(slack, telegram), run_worker=False, now=clock
    ) as bridge:
        for start in range(0, 200, 20):  # ten webhook bodies within one second
            await bridge.post(failures[start : start + 20] + delivered[start // 4 : start // 4 + 5])
            clock.advance(0.1)
        await bridge.worker.drain()
        assert slack.posts("C0ONCALL") == []
        await deliver(bridge, clock, 2)
        await deliver(bridge, clock, 3600)  # nothing new: no update either
    (alert,) = slack.posts("C0ONCALL")
    assert slack.edits("C0ONCALL") == []
    assert alert.text is not None
    assert "Out of credit: 200 messages from Clinic not sent" in alert.text
    assert "(rejected, code 5, detail 2000 INSUFFICIENT_FUNDS)" in alert.text
    assert "+32 470 90 00 00" in alert.text and "+32 470 90 00 09" in alert.text
    assert "+32 470 90 00 10" not in alert.text
    assert "and 190 more" in alert.text
    assert alert.text.startswith("<!subteam^S0ONCALL> ")


async def test_later_failures_update_the_alert_in_place_after_group_interval(
    database_url: str, slack: FakeSlack, telegram: FakeTelegram
) -> None:
    clock = Clock()
    async with running_bridge(
        database_url, posting(), adapters(slack, telegram), run_worker=False, now=clock
    ) as bridge:
        await bridge.post([report(2, 11)])
        await deliver(bridge, clock, 30)
        await bridge.post([report(2, 11, receiver=f"3247000000{n}") for n in range(5)])
        await deliver(bridge, clock, 299)
        assert slack.edits("C0ONCALL") == []  # not before group_interval
        await deliver(bridge, clock, 1)
        await bridge.post([report(2, 11, receiver="32470000009")])
        await deliver(bridge, clock, 300)
    (alert,) = slack.posts("C0ONCALL")
    first, second = slack.edits("C0ONCALL")
    assert first.ts == second.ts == alert.ts
    assert first.text is not None and "6 messages from Clinic not sent" in first.text
    assert second.text is not None and "7 messages from Clinic not sent" in second.text


async def test_two_groups_give_two_alerts(
    database_url: str, slack: FakeSlack, telegram: FakeTelegram
) -> None:
    clock = Clock()
    async with running_bridge(
        database_url, posting(), adapters(slack, telegram), run_worker=False, now=clock
    ) as bridge:
        await bridge.post([report(2, 10), report(4, 18), report(2, 10), report(4, 18)])
        await deliver(bridge, clock, 30)
        await deliver(bridge, clock, 2)  # the channel is paced at one post per 1.2 s
    alerts = sorted(texts(slack, "C0ONCALL"))
    assert len(alerts) == 2
    assert "2 messages from Clinic not sent" in alerts[0]
    assert "Why: the operator refused it as spam" in alerts[0]
    assert "2 messages from Clinic not sent" in alerts[1]
    assert "Why: the receiver's number is invalid" in alerts[1]


def mixed_codes() -> list[list[dict[str, Any]]]:
    """Submitted, delivered, expired, rejected, a network problem twice: one body."""
    body = [report(code, detail) for code, detail in ((0, None), (1, None), (3, None), (9, None))]
    return [body + [report(4, 13), report(0, None), report(4, 13)]]


def repeated_failures() -> list[list[dict[str, Any]]]:
    """Two failures of one message, a failure after delivered, the same report posted twice."""
    duplicate = report(2, 10, messageid="m3")
    return [
        [report(2, 10, messageid="m1"), report(2, 10, messageid="m1")],
        [report(1, messageid="m2"), report(2, 10, messageid="m2")],
        [duplicate],
        [duplicate],
    ]


@pytest.mark.parametrize(
    ("bodies", "why"),
    [
        pytest.param(
            mixed_codes,
            "Why: a problem in the operator's network",
            id="only final failures alert in a mix of codes",
        ),
        pytest.param(
            repeated_failures,
            "Why: the receiver's number is invalid",
            id="a failure after delivered or a duplicate report is not counted again",
        ),
    ],
)
async def test_one_alert_counts_each_final_failure_once(
    database_url: str,
    slack: FakeSlack,
    telegram: FakeTelegram,
    bodies: Callable[[], list[list[dict[str, Any]]]],
    why: str,
) -> None:
    clock = Clock()
    async with running_bridge(
        database_url, posting(), adapters(slack, telegram), run_worker=False, now=clock
    ) as bridge:
        for body in bodies():
            await bridge.post(body)
        await deliver(bridge, clock, 30)
    (alert,) = texts(slack, "C0ONCALL")
    assert "2 messages from Clinic not sent" in alert and why in alert


async def test_insufficient_funds_goes_to_billing_and_oncall_at_once(
    database_url: str, slack: FakeSlack, telegram: FakeTelegram
) -> None:
    clock = Clock()
    async with running_bridge(
        database_url, posting(), adapters(slack, telegram), run_worker=False, now=clock
    ) as bridge:
        await bridge.post([report(5, 2000)])
        await bridge.worker.drain()  # group_wait 0s on this route
    for channel in ("C0BILLING", "C0ONCALL"):
        (alert,) = texts(slack, channel)
        assert "Out of credit: 1 message from Clinic not sent" in alert


async def test_an_alert_survives_a_restart_during_group_wait_and_is_sent_once(
    sqlite_url: str, slack: FakeSlack, telegram: FakeTelegram
) -> None:
    clock = Clock()
    config = posting(routes=[], group_wait="2s")
    async with running_bridge(
        sqlite_url, config, adapters(slack, telegram), run_worker=False, now=clock
    ) as bridge:
        await bridge.post([report(5, 2000, receiver=f"324709{n:05d}") for n in range(120)])
        await deliver(bridge, clock, 1)
    async with running_bridge(
        sqlite_url, config, adapters(slack, telegram), run_worker=False, now=clock
    ) as bridge:
        await bridge.post([report(5, 2000, receiver=f"324707{n:05d}") for n in range(80)])
        await deliver(bridge, clock, 1)
    async with running_bridge(
        sqlite_url, config, adapters(slack, telegram), run_worker=False, now=clock
    ) as bridge:
        await deliver(bridge, clock, 3600)
    (alert,) = texts(slack, "C0ONCALL")
    assert "Out of credit: 200 messages from Clinic not sent" in alert
    assert slack.edits("C0ONCALL") == []
    jobs = await rows(sqlite_url, select(outbox.c.kind, outbox.c.status, outbox.c.payload))
    told = [job for job in jobs if job.kind == "alert" and not job.payload.get("resolve")]
    assert [(job.kind, job.status) for job in told] == [("alert", "done")]
    ((count,),) = await rows(sqlite_url, select(alert_groups.c.count))
    assert count == 200


async def test_a_group_still_failing_after_repeat_interval_is_posted_again(
    database_url: str, slack: FakeSlack, telegram: FakeTelegram
) -> None:
    clock = Clock()
    async with running_bridge(
        database_url, posting(), adapters(slack, telegram), run_worker=False, now=clock
    ) as bridge:
        await bridge.post([report(2, 12)])
        await deliver(bridge, clock, 30)
        for _ in range(9):  # a failure every 35 minutes, for five hours
            clock.advance(1800)
            await bridge.post([report(2, 12)])
            await deliver(bridge, clock, 300)
    first, second = texts(slack, "C0ONCALL")
    assert "1 message from Clinic not sent" in first
    # Posted at 0:30; failures 35 minutes apart are edited in until 4h have passed (4:05).
    assert "8 messages from Clinic not sent" in second
    assert len(slack.edits("C0ONCALL")) == 6 + 2  # six edits before the repost, two after
    assert "<!" not in second  # 2/12 is one phone's problem, and 8 is not above 20


async def test_a_group_quiet_for_repeat_interval_starts_afresh(
    database_url: str, slack: FakeSlack, telegram: FakeTelegram
) -> None:
    clock = Clock()
    async with running_bridge(
        database_url, posting(), adapters(slack, telegram), run_worker=False, now=clock
    ) as bridge:
        await bridge.post([report(2, 12), report(2, 12)])
        await deliver(bridge, clock, 30)
        clock.advance(5 * 3600)
        await bridge.post([report(2, 12)])
        await deliver(bridge, clock, 30)
    first, second = texts(slack, "C0ONCALL")
    assert "2 messages from Clinic not sent" in first
    assert "1 message from Clinic not sent" in second


async def test_telegram_alerts_are_edited_in_place_and_unknown_codes_shown_as_numbers(
    database_url: str, slack: FakeSlack, telegram: FakeTelegram
) -> None:
    clock = Clock()
    config = posting(to=["tg-oncall"], routes=[], on_codes=[2, 4, 5, 7])
    async with running_bridge(
        database_url, config, adapters(slack, telegram), run_worker=False, now=clock
    ) as bridge:
        await bridge.post([report(7, 7777)])
        await deliver(bridge, clock, 30)
        await bridge.post([report(7, 7777)])
        await deliver(bridge, clock, 300)
    (message,) = telegram.messages(ONCALL_CHAT)
    assert message.plain_text.startswith("Not delivered: 1 message from Clinic not sent")
    assert "Why: no reason given (failed, code 7, detail 7777)" in message.plain_text
    (edit,) = telegram.edits(ONCALL_CHAT)
    assert edit.message_id == message.message_id
    assert "2 messages from Clinic not sent" in edit.plain_text


async def test_a_deleted_alert_message_is_posted_again(
    database_url: str, slack: FakeSlack, telegram: FakeTelegram
) -> None:
    clock = Clock()
    async with running_bridge(
        database_url, posting(), adapters(slack, telegram), run_worker=False, now=clock
    ) as bridge:
        await bridge.post([report(2, 14)])
        await deliver(bridge, clock, 30)
        slack.clear()  # the fake forgets the message: chat.update answers message_not_found
        await bridge.post([report(2, 14)])
        await deliver(bridge, clock, 300)
    (alert,) = texts(slack, "C0ONCALL")
    assert "2 messages from Clinic not sent" in alert


async def test_reordering_the_alert_routes_does_not_move_an_open_group(
    database_url: str, slack: FakeSlack, telegram: FakeTelegram
) -> None:
    clock = Clock()
    funds = {"match": {"delivery_code_detail": [2000]}, "to": ["billing"], "group_wait": "0s"}
    clinic = {"match": {"sender": ["Clinic"]}, "to": ["oncall"], "group_wait": "1m"}
    async with running_bridge(
        database_url,
        posting(routes=[funds, clinic]),
        adapters(slack, telegram),
        run_worker=False,
        now=clock,
    ) as bridge:
        await bridge.post([report(2, 12)])  # from Clinic, not 2000: the second route
        await deliver(bridge, clock, 30)
    async with running_bridge(
        database_url,
        posting(routes=[clinic, funds]),
        adapters(slack, telegram),
        run_worker=False,
        now=clock,
    ) as bridge:
        await bridge.post([report(2, 12, receiver="32470111222")])
        await deliver(bridge, clock, 60)
    ((count,),) = await rows(database_url, select(alert_groups.c.count))
    assert count == 2  # one group, grown, whatever position its route now has
    (alert,) = texts(slack, "C0ONCALL")  # the route's own group_wait (1m) and destination
    assert "2 messages from Clinic not sent" in alert
    assert slack.posts("C0BILLING") == []
