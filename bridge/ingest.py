"""Store → route → plan: one transaction per webhook body.

The raw body, every event and every outbox job it causes are committed together, before the
webhook is answered. Nothing here calls a chat or gateway API.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any

from bridge import phones, reports, routing
from bridge.config import Config
from bridge.jobs import ConversationKey, InboxJob
from bridge.smstools import DeliveryReport, InboxMessage, ReadReport, Unparsed, parse_event
from bridge.store import events as event_store
from bridge.store import notify
from bridge.store import outbox as outbox_store
from bridge.store.db import Database

log = logging.getLogger(__name__)


@dataclass
class Problem:
    index: int
    webhook_id: str | None
    problem: str


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
            "problems": [problem.__dict__ for problem in self.problems],
        }


async def ingest(
    database: Database, config: Config, body: bytes, items: list[Any], now: float
) -> IngestResult:
    """Store a parsed webhook body and plan its deliveries, all in one transaction.

    Events not understood are stored with the reason and reported, never dropped; a
    `webhook_id` seen before counts as a duplicate and changes nothing.
    """
    result = IngestResult()
    async with database.transaction() as connection:
        request_id = await event_store.record_request(connection, body, now)
        for index, item in enumerate(items):
            event = parse_event(item)
            unparsed = isinstance(event, Unparsed)
            event_id = await event_store.add_event(
                database,
                connection,
                request_id=request_id,
                webhook_id=event.webhook_id,
                webhook_type=event.webhook_type,
                status="unparsed" if unparsed else "ok",
                problem=event.problem if isinstance(event, Unparsed) else None,
                payload=json.dumps(item, separators=(",", ":")),
                now=now,
            )
            if event_id is None:
                result.duplicates += 1
                result.outcomes.append((event.webhook_type, "duplicate"))
                continue
            if isinstance(event, Unparsed):
                result.problems.append(Problem(index, event.webhook_id, event.problem))
                result.outcomes.append((event.webhook_type, "not_understood"))
                continue
            result.accepted += 1
            result.outcomes.append((event.webhook_type, "accepted"))
            if isinstance(event, InboxMessage):
                destinations = routing.destinations_for(event, config)
                if not destinations:
                    result.unrouted += 1
                conversation = ConversationKey(
                    receiver=phones.key(event.message.receiver),
                    sender=phones.key(event.message.sender),
                )
                for destination in destinations:
                    await outbox_store.enqueue(
                        database,
                        connection,
                        event_id=event_id,
                        destination=destination,
                        payload=InboxJob(conversation=conversation),
                        now=now,
                    )
                    result.jobs += 1
            elif isinstance(event, DeliveryReport):
                result.report_codes.append(event.message.delivery_code)
                result.jobs += await reports.plan_delivery(
                    database, connection, config, event, event_id, now
                )
            elif isinstance(event, ReadReport):
                result.jobs += await reports.plan_read(database, connection, event, event_id, now)
        if result.jobs:
            await notify.announce(database, connection)
    if result.problems or result.unrouted:
        log.warning(
            "webhook stored with %d event(s) not understood and %d inbox message(s) matching "
            "no route",
            len(result.problems),
            result.unrouted,
            extra={"outcome": "not_understood" if result.problems else "unrouted"},
        )
    return result
