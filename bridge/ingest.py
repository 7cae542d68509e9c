"""Store → route → plan: the webhook bodies of one group commit in one transaction.

The raw bodies, every event and every outbox job they cause are committed together, before
any of the webhooks is answered. Events go in with one multi-row INSERT per group (deduplicated
on `webhook_id`), inbox jobs likewise. Nothing here calls a chat or gateway API.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from bridge import phones, reports, routing
from bridge.config import Config
from bridge.jobs import ConversationKey, InboxJob
from bridge.smstools import DeliveryReport, InboxMessage, ReadReport, Unparsed, parse_event
from bridge.store import events as event_store
from bridge.store import notify
from bridge.store import outbox as outbox_store
from bridge.store.db import Database

log = logging.getLogger(__name__)

PROBLEMS_LISTED = 20  # a reply lists the first problems only, and counts them all


@dataclass
class Problem:
    index: int
    webhook_id: str | None
    problem: str


@dataclass(frozen=True)
class Body:
    """One webhook body: its raw bytes (kept as received) and its parsed items."""

    raw: bytes
    items: list[Any]
    received_at: float


@dataclass
class IngestResult:
    accepted: int = 0
    duplicates: int = 0
    jobs: int = 0
    unrouted: int = 0
    problems: list[Problem] = field(default_factory=list)
    # For the metrics: (webhook_type, accepted | duplicate | not_understood) per event, and
    # the delivery code of each accepted delivery report.
    outcomes: list[tuple[str | None, str]] = field(default_factory=list)
    report_codes: list[int | None] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "accepted": self.accepted,
            "duplicates": self.duplicates,
            "not_understood": len(self.problems),
            "problems": [problem.__dict__ for problem in self.problems[:PROBLEMS_LISTED]],
        }


async def ingest(
    database: Database, config: Config, body: bytes, items: list[Any], now: float
) -> IngestResult:
    """Store one parsed webhook body and plan its deliveries, in a transaction of its own."""
    (result,) = await ingest_group(database, config, [Body(body, items, now)])
    return result


async def ingest_group(
    database: Database, config: Config, bodies: Sequence[Body]
) -> list[IngestResult]:
    """Store parsed webhook bodies and plan their deliveries, all in one transaction.

    Events not understood are stored with the reason and reported, never dropped; a
    `webhook_id` seen before (or earlier in the group) counts as a duplicate and changes
    nothing. A body whose events are all duplicates is not stored again.
    """
    async with database.transaction() as connection:
        request_ids = await event_store.record_requests(
            connection, [(body.raw, body.received_at) for body in bodies]
        )
        parsed = [[parse_event(item) for item in body.items] for body in bodies]
        stored = await event_store.add_events(
            database,
            connection,
            [
                event_store.NewEvent(
                    request_id=request_id,
                    webhook_id=event.webhook_id,
                    webhook_type=event.webhook_type,
                    status="unparsed" if isinstance(event, Unparsed) else "ok",
                    problem=event.problem if isinstance(event, Unparsed) else None,
                    payload=json.dumps(item, separators=(",", ":")),
                    received_at=body.received_at,
                )
                for request_id, body, body_events in zip(request_ids, bodies, parsed, strict=True)
                for item, event in zip(body.items, body_events, strict=True)
            ],
        )
        planner = _Planner(database, connection, config, stored)
        results = [
            await planner.plan_body(body, body_events)
            for body, body_events in zip(bodies, parsed, strict=True)
        ]
        await planner.flush()
        await event_store.forget_requests(
            connection,
            [
                request_id
                for request_id, body, result in zip(request_ids, bodies, results, strict=True)
                if body.items and result.duplicates == len(body.items)
            ],
        )
        if planner.jobs:
            await notify.announce(database, connection)
    for result in results:
        if result.problems or result.unrouted:
            log.warning(
                "webhook stored with %d event(s) not understood and %d inbox message(s) "
                "matching no route",
                len(result.problems),
                result.unrouted,
                extra={"outcome": "not_understood" if result.problems else "unrouted"},
            )
    return results


class _Planner:
    """Plans the jobs of a group's new events in arrival order. Inbox jobs are gathered and
    inserted together; they are flushed before a report plans its own, so job ids (the order
    within a lane) follow the order events arrived in."""

    def __init__(
        self,
        database: Database,
        connection: AsyncConnection,
        config: Config,
        stored: dict[str, int],
    ) -> None:
        self.database, self.connection, self.config = database, connection, config
        self.unclaimed = dict(stored)  # new event ids not yet given to an item
        self.pending: list[outbox_store.NewJob] = []
        self.pending_at = 0.0
        self.jobs = 0

    async def flush(self) -> None:
        if self.pending:
            await outbox_store.enqueue_many(
                self.database, self.connection, self.pending, self.pending_at
            )
            self.pending = []

    async def plan_body(self, body: Body, body_events: list[Any]) -> IngestResult:
        result = IngestResult()
        now = body.received_at
        for index, event in enumerate(body_events):
            if isinstance(event, Unparsed):
                if (
                    event.webhook_id is not None
                    and self.unclaimed.pop(event.webhook_id, None) is None
                ):
                    result.duplicates += 1
                    result.outcomes.append((event.webhook_type, "duplicate"))
                else:
                    result.problems.append(Problem(index, event.webhook_id, event.problem))
                    result.outcomes.append((event.webhook_type, "not_understood"))
                continue
            event_id = self.unclaimed.pop(event.webhook_id, None)
            if event_id is None:
                result.duplicates += 1
                result.outcomes.append((event.webhook_type, "duplicate"))
                continue
            result.accepted += 1
            result.outcomes.append((event.webhook_type, "accepted"))
            if isinstance(event, InboxMessage):
                destinations = routing.destinations_for(event, self.config)
                if not destinations:
                    result.unrouted += 1
                conversation = ConversationKey(
                    receiver=phones.key(event.message.receiver),
                    sender=phones.key(event.message.sender),
                )
                if self.pending and self.pending_at != now:
                    await self.flush()
                self.pending_at = now
                for destination in destinations:
                    self.pending.append(
                        outbox_store.NewJob(
                            event_id, destination, InboxJob(conversation=conversation)
                        )
                    )
                result.jobs += len(destinations)
            elif isinstance(event, DeliveryReport):
                await self.flush()
                result.report_codes.append(event.message.delivery_code)
                result.jobs += await reports.plan_delivery(
                    self.database, self.connection, self.config, event, event_id, now
                )
            elif isinstance(event, ReadReport):
                await self.flush()
                result.jobs += await reports.plan_read(
                    self.database, self.connection, event, event_id, now
                )
        self.jobs += result.jobs
        return result
