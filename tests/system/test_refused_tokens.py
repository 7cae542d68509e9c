"""A destination whose token the platform refuses, at start-up or while running, behaves like
one whose token variable is unset: its jobs wait in the outbox (never dead-lettered for it,
not retried in a loop), the other destinations deliver, `/readyz` answers 503 naming the
variable, and a restart with a good token delivers what waited, once."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import select

from bridge.chat.base import ChatAdapter
from bridge.chat.console import ConsoleAdapter
from bridge.chat.slack import SlackAdapter
from bridge.retry import DAY
from bridge.store.schema import outbox
from testkit.fakes.slack import FakeSlack
from tests.support.harness import Clock, RunningBridge, running_bridge
from tests.support.pipeline_fixtures import LINE_FR, SLACK_TOKEN, inbox, make_config, rows

CUSTOMER = "32470555101"
SUPPORT_TOKEN = "xoxb-support-only"


def destinations(slack: FakeSlack, support_token: str) -> dict[str, ChatAdapter]:
    return {
        "support": SlackAdapter("support", support_token, "C0SUPPORT", base_url=slack.api_url),
        "sales": SlackAdapter("sales", SLACK_TOKEN, "C0SALES", base_url=slack.api_url),
        "nl-team": ConsoleAdapter("nl-team", io.StringIO()),
    }


@contextmanager
def accepted(slack: FakeSlack, token: str) -> Iterator[None]:
    """The fake Slack accepts `token` too, until the block ends."""
    slack.tokens.add(token)
    try:
        yield
    finally:
        slack.tokens.discard(token)


async def statuses(database_url: str) -> dict[str, str]:
    found = await rows(database_url, select(outbox.c.destination, outbox.c.status))
    return {job.destination: job.status for job in found}


async def deliver_all(bridge: RunningBridge) -> None:
    """Everything due now; a refused destination's jobs retried in a loop would never end."""
    await asyncio.wait_for(bridge.worker.drain(), timeout=10)


async def destinations_check(bridge: RunningBridge) -> tuple[int, dict[str, object]]:
    response = await bridge.client.get("/readyz")
    check: dict[str, object] = response.json()["checks"]["destinations"]
    return response.status_code, check


async def test_a_token_refused_at_start_up_keeps_its_jobs_waiting_until_a_good_one(
    database_url: str, slack: FakeSlack
) -> None:
    clock, config = Clock(), make_config()
    refused = destinations(slack, "xoxb-revoked")
    async with running_bridge(database_url, config, refused, run_worker=False, now=clock) as bridge:
        await bridge.post(inbox(CUSTOMER, "where is my order?", receiver=LINE_FR))
        await deliver_all(bridge)
        clock.advance(2 * DAY)  # past the retry horizon: a failing job would be dead by now
        await deliver_all(bridge)
        status, check = await destinations_check(bridge)
    assert await statuses(database_url) == {"support": "pending", "sales": "done"}
    assert len(slack.posts("C0SALES")) == 1 and not slack.posts("C0SUPPORT")
    assert status == 503 and check["ok"] is False
    detail = str(check["detail"])
    assert "support: slack destination 'support'" in detail and "invalid_auth" in detail
    assert "SLACK_BOT_TOKEN" in detail and "restart" in detail
    assert "xoxb-revoked" not in detail and "sales" not in detail

    with accepted(slack, SUPPORT_TOKEN):
        good = destinations(slack, SUPPORT_TOKEN)
        async with running_bridge(
            database_url, config, good, run_worker=False, now=clock
        ) as bridge:
            await deliver_all(bridge)
            status, check = await destinations_check(bridge)
    assert await statuses(database_url) == {"support": "done", "sales": "done"}
    assert len(slack.posts("C0SUPPORT")) == 1 and len(slack.posts("C0SALES")) == 1
    assert status == 200 and check["ok"] is True


async def test_a_token_revoked_while_running_keeps_its_jobs_waiting(
    database_url: str, slack: FakeSlack
) -> None:
    clock, config = Clock(), make_config()
    with accepted(slack, SUPPORT_TOKEN):
        async with running_bridge(
            database_url, config, destinations(slack, SUPPORT_TOKEN), run_worker=False, now=clock
        ) as bridge:
            status_before, _ = await destinations_check(bridge)
            slack.tokens.discard(SUPPORT_TOKEN)  # revoked once the bridge started
            await bridge.post(inbox(CUSTOMER, "where is my order?", receiver=LINE_FR))
            await deliver_all(bridge)
            clock.advance(2 * DAY)
            await deliver_all(bridge)
            status, check = await destinations_check(bridge)
        assert status_before == 200
        assert await statuses(database_url) == {"support": "pending", "sales": "done"}
        assert not slack.posts("C0SUPPORT")
        assert status == 503 and "invalid_auth" in str(check["detail"])
        assert "SLACK_BOT_TOKEN" in str(check["detail"])

        slack.tokens.add(SUPPORT_TOKEN)  # a new token, and a restart
        async with running_bridge(
            database_url, config, destinations(slack, SUPPORT_TOKEN), run_worker=False, now=clock
        ) as bridge:
            await deliver_all(bridge)
    assert await statuses(database_url) == {"support": "done", "sales": "done"}
    assert len(slack.posts("C0SUPPORT")) == 1


async def test_on_call_is_told_once_when_a_running_destinations_token_is_refused(
    database_url: str, slack: FakeSlack
) -> None:
    clock = Clock()
    config = make_config({"alerts": {"to": ["nl-team"]}})
    board = io.StringIO()
    chosen = destinations(slack, SUPPORT_TOKEN)
    chosen["nl-team"] = ConsoleAdapter("nl-team", board)
    with accepted(slack, SUPPORT_TOKEN):
        async with running_bridge(
            database_url, config, chosen, run_worker=False, now=clock
        ) as bridge:
            slack.tokens.discard(SUPPORT_TOKEN)  # revoked once the bridge started
            await bridge.post(inbox(CUSTOMER, "where is my order?", receiver=LINE_FR))
            await bridge.post(inbox(CUSTOMER, "hello?", receiver=LINE_FR))
            await deliver_all(bridge)
    told = board.getvalue()
    assert told.count("support") >= 1 and "invalid_auth" in told
    notices = [
        job
        for job in await rows(database_url, select(outbox.c.kind, outbox.c.destination))
        if job.kind == "notice"
    ]
    assert [job.destination for job in notices] == ["nl-team"]  # once, for both waiting jobs
