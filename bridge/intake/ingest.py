"""Parse → route → plan: the webhook bodies the request path stored, in one transaction.

The worker's intake (`planning`) hands over the oldest bodies waiting; their events and every
outbox job they cause are committed together with the bodies' mark as planned. Events go in
with one multi-row INSERT per group (deduplicated on `webhook_id`), inbox jobs likewise.
Nothing here calls a chat or gateway API.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from bridge import json_text, phones
from bridge.config import Config
from bridge.intake import alerts, reports, routing
from bridge.jobs import ConversationKey, InboxJob
from bridge.remembered import remembered
from bridge.smstools.webhooks import DeliveryReport, InboxMessage, ReadReport, Unparsed, parse_event
from bridge.store import group_writes as group_writes_store
from bridge.store import outbox as outbox_store
from bridge.store import wakeups as wakeups_store
from bridge.store.db import Database
from bridge.store.events import OK, UNPARSED

log = logging.getLogger(__name__)


@dataclass
class Problem:
    index: int
    webhook_id: str | None
    webhook_type: str | None
    problem: str


@dataclass(frozen=True)
class Body:
    """One webhook body as the request path stores it: its raw bytes (kept as received) and
    its parsed items."""

    raw: bytes
    items: list[Any]
    received_at: float


@dataclass(frozen=True)
class StoredBody:
    """A body the request path stored: its id (bodies are planned in id order), its items."""

    id: int
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


def items_of(document: Any) -> list[Any] | None:
    """A body's events: a JSON array of events, or one event; None for anything else."""
    if isinstance(document, dict):
        return [document]
    if isinstance(document, list):
        return document
    return None


def stored_items(raw: bytes) -> list[Any] | None:
    """The events of a body the request path stored, read as it read them; None for one
    it would have refused."""
    try:
        return items_of(json_text.read(raw))
    except (ValueError, RecursionError):
        return None


async def plan_group(
    database: Database,
    connection: AsyncConnection,
    config: Config,
    bodies: Sequence[StoredBody],
    now: float,
    *,
    sender: str = "",
) -> list[IngestResult]:
    """Store stored bodies' events, plan their deliveries and mark the bodies planned at
    `now`, in the caller's transaction; the NOTIFY of new jobs names `sender`
    (`wakeups.announce`).

    Events not understood are stored with the reason and reported, never dropped; a
    `webhook_id` seen before (or earlier in the group) counts as a duplicate and changes
    nothing. A body whose events are all duplicates is deleted (a resend adds nothing).

    Inbox jobs need no database to plan, so those of the events before the group's first
    report go in with the events, in one call (`store.group_writes`); a report's planning
    reads the database, so it and everything after it are planned once the events are in.
    """
    parsed = [[parse_event(item) for item in body.items] for body in bodies]
    flat = [event for body_events in parsed for event in body_events]
    inbox = [_route(config, event) if isinstance(event, InboxMessage) else None for event in flat]
    cut = next(
        (n for n, event in enumerate(flat) if isinstance(event, DeliveryReport | ReadReport)),
        len(flat),
    )
    group = group_writes_store.GroupWrite(
        [group_writes_store.PlannedBody(body.id, len(body.items)) for body in bodies],
        [
            group_writes_store.NewEvent(
                body=index,
                webhook_id=event.webhook_id,
                webhook_type=event.webhook_type,
                status=UNPARSED if isinstance(event, Unparsed) else OK,
                problem=event.problem if isinstance(event, Unparsed) else None,
                payload=json_text.compact(item),
                received_at=body.received_at,
            )
            for index, (body, body_events) in enumerate(zip(bodies, parsed, strict=True))
            for item, event in zip(body.items, body_events, strict=True)
        ],
        _early_jobs(bodies, parsed, inbox, cut),
    )
    stored = await group_writes_store.write(database, connection, group, now, sender)
    planner = _Planner(database, connection, config, stored, inbox, cut)
    results = await planner.plan(bodies, parsed, sender)
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


_Route = tuple[tuple[str, ...], InboxJob]  # an inbox message's destinations and its job


def _route(config: Config, event: InboxMessage) -> _Route:
    job = _inbox_job(phones.key(event.message.receiver), phones.key(event.message.sender))
    return routing.destinations_for(event, config), job


@remembered
def _inbox_job(receiver: str, sender: str) -> InboxJob:
    """The job of an inbox message of this conversation. Frozen, so one serves all its
    messages: building one is two pydantic validations, a tenth of what storing the webhook
    costs the event loop."""
    return InboxJob(conversation=ConversationKey(receiver=receiver, sender=sender))


def _early_jobs(
    bodies: Sequence[StoredBody], parsed: list[list[Any]], inbox: list[_Route | None], cut: int
) -> list[group_writes_store.NewEventJob]:
    """The inbox jobs of the events before `cut`, each event once, in arrival order."""
    jobs: list[group_writes_store.NewEventJob] = []
    seen: set[str] = set()
    position = 0
    for body, body_events in zip(bodies, parsed, strict=True):
        for event in body_events:
            route = inbox[position]
            position += 1
            if position > cut:
                return jobs
            if route is None or event.webhook_id in seen:
                continue
            seen.add(event.webhook_id)
            destinations, job = route
            jobs += [
                group_writes_store.NewEventJob(event.webhook_id, destination, job, body.received_at)
                for destination in destinations
            ]
    return jobs


class _Planner:
    """Counts a group's events and plans the jobs of its new ones in arrival order. Jobs of
    the events before `cut` went in with the events; later inbox jobs are gathered and
    inserted together, flushed before a report plans its own, so job ids (the order within a
    lane) follow the order events arrived in."""

    def __init__(
        self,
        database: Database,
        connection: AsyncConnection,
        config: Config,
        stored: dict[str, int],
        inbox: list[_Route | None],
        cut: int,
    ) -> None:
        self.database, self.connection, self.config = database, connection, config
        self.unclaimed = dict(stored)  # new event ids not yet given to an item
        self.inbox, self.cut = inbox, cut
        self.position = 0  # of the next event in the group
        self.pending: list[outbox_store.NewJob] = []
        self.pending_at = 0.0
        self.late = 0  # jobs planned after the cut: the group's write did not announce them
        self.incidents = alerts.OpenIncidents()  # read once for the group's delivered reports

    async def plan(
        self, bodies: Sequence[StoredBody], parsed: list[list[Any]], sender: str = ""
    ) -> list[IngestResult]:
        results = [
            await self.plan_body(body, body_events)
            for body, body_events in zip(bodies, parsed, strict=True)
        ]
        await self.flush()
        if self.late:
            await wakeups_store.announce(self.database, self.connection, sender)
        return results

    async def flush(self) -> None:
        if self.pending:
            await outbox_store.enqueue_many(
                self.database, self.connection, self.pending, self.pending_at
            )
            self.pending = []

    async def plan_body(self, body: StoredBody, body_events: list[Any]) -> IngestResult:
        result = IngestResult()
        now = body.received_at
        for index, event in enumerate(body_events):
            position = self.position
            self.position += 1
            if isinstance(event, Unparsed):
                if (
                    event.webhook_id is not None
                    and self.unclaimed.pop(event.webhook_id, None) is None
                ):
                    result.duplicates += 1
                    result.outcomes.append((event.webhook_type, "duplicate"))
                else:
                    result.problems.append(
                        Problem(index, event.webhook_id, event.webhook_type, event.problem)
                    )
                    result.outcomes.append((event.webhook_type, "not_understood"))
                continue
            event_id = self.unclaimed.pop(event.webhook_id, None)
            if event_id is None:
                result.duplicates += 1
                result.outcomes.append((event.webhook_type, "duplicate"))
                continue
            result.accepted += 1
            result.outcomes.append((event.webhook_type, "accepted"))
            route = self.inbox[position]
            if route is not None:
                destinations, job = route
                if not destinations:
                    result.unrouted += 1
                result.jobs += len(destinations)
                if position < self.cut:  # in already, with the events
                    continue
                if self.pending and self.pending_at != now:
                    await self.flush()
                self.pending_at = now
                for destination in destinations:
                    self.pending.append(outbox_store.NewJob(event_id, destination, job))
                self.late += len(destinations)
            elif isinstance(event, DeliveryReport):
                await self.flush()
                result.report_codes.append(event.message.delivery_code)
                planned = await reports.plan_delivery(
                    self.database,
                    self.connection,
                    self.config,
                    event,
                    event_id,
                    now,
                    self.incidents,
                )
                result.jobs += planned
                self.late += planned
            elif isinstance(event, ReadReport):
                await self.flush()
                planned = await reports.plan_read(
                    self.database, self.connection, event, event_id, now
                )
                result.jobs += planned
                self.late += planned
        return result


async def plan_event(
    database: Database,
    connection: AsyncConnection,
    config: Config,
    event: InboxMessage | DeliveryReport | ReadReport,
    event_id: int,
    now: float,
) -> int:
    """Plan what one stored, understood event calls for, as ingest does, in the caller's
    transaction (replaying an event stored earlier); return how many jobs were added."""
    if isinstance(event, DeliveryReport):
        planned = await reports.plan_delivery(database, connection, config, event, event_id, now)
    elif isinstance(event, ReadReport):
        planned = await reports.plan_read(database, connection, event, event_id, now)
    else:
        destinations, job = _route(config, event)
        jobs = [outbox_store.NewJob(event_id, destination, job) for destination in destinations]
        planned = await outbox_store.enqueue_many(database, connection, jobs, now)
    if planned:
        await wakeups_store.announce(database, connection)
    return planned
