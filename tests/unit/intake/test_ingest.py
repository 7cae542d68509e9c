"""Ingest's decisions before and after the events are stored: which inbox jobs go in with the
events, and how a body's events are counted; no database is reached."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bridge.config import build
from bridge.intake.ingest import StoredBody, _early_jobs, _Planner, _route
from bridge.jobs import ConversationKey, InboxJob
from bridge.settings import normalise_database_url
from bridge.smstools.webhooks import InboxMessage, parse_event
from bridge.store.db import Database

CONFIG = build(
    {
        "destinations": {
            "support": {"slack": {"channel": "C0SUPPORT"}},
            "sales": {"slack": {"channel": "C0SALES"}},
        },
        "routes": [
            {"match": {"receiver": "32460200000"}, "to": ["support", "sales"]},
            {"match": {"receiver": "32460300000"}, "to": ["sales"]},
        ],
    },
    "test config",
    {"SLACK_BOT_TOKEN": "xoxb-test"},
)


def inbox(webhook_id: str, sender: str = "32470123456", receiver: str = "32460200000") -> Any:
    return {
        "webhook_id": webhook_id,
        "webhook_type": "inbox_message",
        "message": {"sender": sender, "receiver": receiver, "content": "hello"},
    }


def report(webhook_id: str) -> Any:
    return {
        "webhook_id": webhook_id,
        "webhook_type": "read_report",
        "message": {"messageid": "m1", "receiver": "32470123456", "read_at": "2026-01-01"},
    }


def parsed(bodies: list[StoredBody]) -> list[list[Any]]:
    return [[parse_event(item) for item in body.items] for body in bodies]


def routes(events: list[list[Any]]) -> list[Any]:
    flat = [event for body_events in events for event in body_events]
    return [_route(CONFIG, e) if isinstance(e, InboxMessage) else None for e in flat]


@pytest.fixture
async def unused_database(tmp_path: Path) -> AsyncIterator[Database]:
    """A Database that is never connected to: planning without a cut needs none."""
    database = Database(normalise_database_url(f"sqlite:///{tmp_path / 'never.db'}"))
    yield database
    await database.close()
    assert not (tmp_path / "never.db").exists()


def test_an_inbox_message_is_routed_to_its_destinations_in_its_customers_lane() -> None:
    event = parse_event(inbox("wh1", sender="+32 470 12 34 56"))
    assert isinstance(event, InboxMessage)
    destinations, job = _route(CONFIG, event)
    assert destinations == ("support", "sales")
    assert job == InboxJob(
        conversation=ConversationKey(receiver="32460200000", sender="32470123456")
    )


def test_inbox_jobs_before_the_first_report_go_in_once_each_in_arrival_order() -> None:
    bodies = [
        StoredBody(1, [inbox("wh1"), inbox("wh2", receiver="32460300000")], 10.0),
        StoredBody(2, [inbox("wh1"), report("wh3"), inbox("wh4")], 11.0),
    ]
    events = parsed(bodies)
    cut = 3  # the report's position: it and what follows are planned once stored
    jobs = _early_jobs(bodies, events, routes(events), cut)
    assert [(job.webhook_id, job.destination, job.at) for job in jobs] == [
        ("wh1", "support", 10.0),
        ("wh1", "sales", 10.0),
        ("wh2", "sales", 10.0),
    ]  # wh1 sent again in the second body is one event: its jobs are not doubled
    assert all(isinstance(job.payload, InboxJob) for job in jobs)


async def test_new_events_are_accepted_and_the_rest_counted_as_duplicates_or_problems(
    unused_database: Database,
) -> None:
    body = StoredBody(
        1,
        [
            inbox("wh1"),
            inbox("wh1"),  # again in the same body: a duplicate
            inbox("wh2"),  # stored before: a duplicate
            inbox("wh3", receiver="32469999999"),  # accepted, but no route matches
            {"webhook_id": "wh4", "webhook_type": "inbox_message"},  # not understood
            {"webhook_type": "inbox_message"},  # not understood, without an id
        ],
        10.0,
    )
    events = parsed([body])
    inbox_routes = routes(events)
    stored = {"wh1": 1, "wh3": 3, "wh4": 4}  # what the group's write stored now
    planner = _Planner(unused_database, None, CONFIG, stored, inbox_routes, len(inbox_routes))
    (result,) = await planner.plan([body], events)
    assert (result.accepted, result.duplicates, result.unrouted) == (2, 2, 1)
    assert result.jobs == 2  # wh1 to support and sales; they went in with the events
    assert [(p.index, p.webhook_id) for p in result.problems] == [(4, "wh4"), (5, None)]
    assert [outcome for _, outcome in result.outcomes] == [
        "accepted",
        "duplicate",
        "duplicate",
        "accepted",
        "not_understood",
        "not_understood",
    ]


async def test_an_event_not_understood_that_was_stored_before_is_a_duplicate(
    unused_database: Database,
) -> None:
    body = StoredBody(1, [{"webhook_id": "wh9", "webhook_type": "inbox_message"}], 10.0)
    events = parsed([body])
    planner = _Planner(unused_database, None, CONFIG, {}, routes(events), 1)
    (result,) = await planner.plan([body], events)
    assert (result.duplicates, result.problems) == (1, [])
