"""The job handlers that need no database: on-call's notices and credit posts, and every
handler's refusal of a job that is not its kind."""

from __future__ import annotations

import io
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bridge.chat.console import ConsoleAdapter
from bridge.config import Config, build
from bridge.delivery.handlers import (
    HANDLERS,
    deliver_credit,
    deliver_failure_note,
    deliver_notice,
    deliver_read,
)
from bridge.errors import Permanent, Reason
from bridge.jobs import (
    ConversationKey,
    CreditJob,
    Delivery,
    InboxJob,
    Job,
    Kind,
    NoticeJob,
    Payload,
    ReadJob,
)
from bridge.settings import normalise_database_url
from bridge.store.db import Database

ENV = {"SLACK_BOT_TOKEN": "xoxb-test"}
DESTINATIONS = {
    "support": {"slack": {"channel": "C0SUPPORT"}},
    "oncall": {"slack": {"channel": "C0ONCALL"}},
}
WITH_ALERTS = build(
    {
        "destinations": DESTINATIONS,
        "default": ["support"],
        "alerts": {"to": ["oncall"], "mention": "<!subteam^S0ONCALL>"},
    },
    "test config",
    ENV,
)
WITHOUT_ALERTS = build({"destinations": DESTINATIONS, "default": ["support"]}, "test", ENV)


@pytest.fixture
async def database(tmp_path: Path) -> AsyncIterator[Database]:
    """A Database never connected to: these handlers must not need one."""
    database = Database(normalise_database_url(f"sqlite:///{tmp_path / 'never.db'}"))
    yield database
    await database.close()
    assert not (tmp_path / "never.db").exists()


def delivery(
    database: Database, payload: Payload, shown: io.StringIO, config: Config = WITH_ALERTS
) -> Delivery:
    job = Job(9, None, "oncall", "lane", payload.kind, payload, 0, time.time())
    return Delivery(
        database=database,
        config=config,
        adapter=ConsoleAdapter("oncall", shown),
        job=job,
        event=None,
        received_at=job.created_at,
        now=time.time,
    )


def test_every_kind_of_job_has_a_handler() -> None:
    assert set(HANDLERS) == set(Kind)


async def test_a_failing_destination_is_told_to_on_call_with_the_mention(
    database: Database,
) -> None:
    shown = io.StringIO()
    notice = NoticeJob(failing="sales", reason=Reason.NOT_FOUND, detail="channel_not_found")
    await deliver_notice(delivery(database, notice, shown))
    text = shown.getvalue()
    assert "<!subteam^S0ONCALL>" in text and "Posting to sales fails: not_found" in text
    assert "channel_not_found" in text and "dead-letters retry --all" in text


async def test_a_moved_chat_is_told_as_followed_not_as_failing(database: Database) -> None:
    shown = io.StringIO()
    moved = NoticeJob(failing="nl-team", reason=Reason.MOVED, detail="now -1004000000001")
    await deliver_notice(delivery(database, moved, shown))
    text = shown.getvalue()
    assert "nl-team: the Telegram group became a supergroup" in text
    assert "now -1004000000001." in text and "fails" not in text


async def test_low_credit_pages_on_call_and_credit_back_up_does_not(database: Database) -> None:
    low, back = io.StringIO(), io.StringIO()
    await deliver_credit(delivery(database, CreditJob(low=True, balance="3", threshold="5"), low))
    await deliver_credit(delivery(database, CreditJob(low=False, balance="9", threshold="5"), back))
    assert "<!subteam^S0ONCALL>" in low.getvalue() and "credit is low: 3" in low.getvalue()
    assert "<!subteam" not in back.getvalue() and "back above 5" in back.getvalue()


async def test_without_an_alerts_section_a_notice_carries_no_mention(database: Database) -> None:
    shown = io.StringIO()
    notice = NoticeJob(failing="sales", reason=Reason.AUTH, detail="invalid_auth")
    await deliver_notice(delivery(database, notice, shown, WITHOUT_ALERTS))
    assert "Posting to sales fails: auth" in shown.getvalue()
    assert "<!subteam" not in shown.getvalue()


@pytest.mark.parametrize(
    ("handler", "payload"),
    [
        (deliver_notice, ReadJob(messageid="m1")),
        (deliver_credit, ReadJob(messageid="m1")),
        (
            deliver_read,  # a read job without its read report
            ReadJob(messageid="m1"),
        ),
        (
            deliver_failure_note,  # an inbox job, and no delivery report
            InboxJob(conversation=ConversationKey(receiver="1", sender="2")),
        ),
    ],
)
async def test_a_job_of_another_kind_or_without_its_event_fails_for_good_naming_the_job(
    database: Database, handler: Any, payload: Payload
) -> None:
    shown = io.StringIO()
    with pytest.raises(Permanent) as refused:
        await handler(delivery(database, payload, shown))
    assert refused.value.reason is Reason.CONFIG and "job 9" in str(refused.value)
    assert shown.getvalue() == ""  # nothing was posted
