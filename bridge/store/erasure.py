"""Erasure's SQL: find and erase what is stored about one customer (`smsbridge forget`).

Rows that count something stay (events, statuses, jobs, alert groups); the customer's
content and number go from them. Conversations and their chat message links, which exist
only to tie a customer to chat threads, are deleted.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

from sqlalchemy import case, delete, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from bridge.store.outbox import DONE
from bridge.store.retention import ERASED_PAYLOAD
from bridge.store.schema import (
    alert_groups,
    chat_messages,
    conversations,
    events,
    message_status,
    outbox,
    webhook_requests,
)

ERASED_LANE = "erased"
NOT_DELIVERED = "not delivered: erased on request (smsbridge forget)"


@dataclass(frozen=True)
class StoredEvent:
    id: int
    request_id: int
    status: str
    payload: str


async def events_after(connection: AsyncConnection, after: int, limit: int) -> list[StoredEvent]:
    """Events with content still stored, in id order after `after`."""
    rows = await connection.execute(
        select(events.c.id, events.c.request_id, events.c.status, events.c.payload)
        .where(events.c.id > after, events.c.erased_at.is_(None))
        .order_by(events.c.id)
        .limit(limit)
    )
    return [StoredEvent(*row) for row in rows]


async def erase_events(
    connection: AsyncConnection, ids: Collection[int], now: float
) -> tuple[int, int]:
    """Erase the events' content and delete the raw bodies they came in (a body may hold
    other customers' events too: those keep their stored copy). Returns (events, bodies)."""
    if not ids:
        return 0, 0
    requests = select(events.c.request_id).where(events.c.id.in_(list(ids))).distinct()
    bodies = await connection.execute(
        delete(webhook_requests).where(webhook_requests.c.id.in_(requests))
    )
    erased = await connection.execute(
        update(events)
        .where(events.c.id.in_(list(ids)), events.c.erased_at.is_(None))
        .values(payload=ERASED_PAYLOAD, erased_at=now)
    )
    return int(erased.rowcount), int(bodies.rowcount)


async def erase_jobs(
    connection: AsyncConnection, event_ids: Collection[int], now: float
) -> tuple[int, int]:
    """The events' jobs lose their lane (it holds the number); those not delivered yet, or
    dead letters that would be retried, are closed. Returns (jobs, closed)."""
    if not event_ids:
        return 0, 0
    of_events = outbox.c.event_id.in_(list(event_ids))
    open_jobs = outbox.c.status != DONE
    closed = await connection.execute(
        select(outbox.c.id).where(of_events, open_jobs, outbox.c.lane != ERASED_LANE)
    )
    closing = len(closed.all())
    result = await connection.execute(
        update(outbox)
        .where(of_events, outbox.c.lane != ERASED_LANE)
        .values(
            lane=ERASED_LANE,
            last_error=case((open_jobs, NOT_DELIVERED), else_=outbox.c.last_error),
            status=DONE,
            finished_at=func.coalesce(outbox.c.finished_at, now),
            locked_until=None,
        )
    )
    return int(result.rowcount), closing


async def erase_statuses(connection: AsyncConnection, number: str, now: float) -> int:
    result = await connection.execute(
        update(message_status)
        .where(or_(message_status.c.receiver == number, message_status.c.sender == number))
        .values(sender="", receiver="", erased_at=now)
    )
    return int(result.rowcount)


@dataclass(frozen=True)
class Thread:
    destination: str
    chat: str | None
    thread: str | None


async def delete_conversations(
    connection: AsyncConnection, number: str
) -> tuple[int, int, list[Thread]]:
    """The customer's conversations and their chat message links.

    Returns (conversations, chat message links, the chat threads they were in).
    """
    rows = (
        await connection.execute(
            select(
                conversations.c.id,
                conversations.c.destination,
                conversations.c.chat,
                conversations.c.thread,
            ).where(conversations.c.sender == number)
        )
    ).all()
    if not rows:
        return 0, 0, []
    ids = [row.id for row in rows]
    links = await connection.execute(
        delete(chat_messages).where(chat_messages.c.conversation_id.in_(ids))
    )
    await connection.execute(delete(conversations).where(conversations.c.id.in_(ids)))
    threads = [Thread(row.destination, row.chat, row.thread) for row in rows]
    return len(ids), int(links.rowcount), threads


@dataclass(frozen=True)
class AlertGroup:
    id: int
    group_key: str
    labels: str
    sender: str
    receivers: str
    others: int


async def alert_groups_all(connection: AsyncConnection) -> Sequence[AlertGroup]:
    rows = await connection.execute(
        select(
            alert_groups.c.id,
            alert_groups.c.group_key,
            alert_groups.c.labels,
            alert_groups.c.sender,
            alert_groups.c.receivers,
            alert_groups.c.others,
        )
    )
    return [AlertGroup(*row) for row in rows]


async def rewrite_alert_group(connection: AsyncConnection, group: AlertGroup) -> None:
    await connection.execute(
        update(alert_groups)
        .where(alert_groups.c.id == group.id)
        .values(
            group_key=group.group_key,
            labels=group.labels,
            sender=group.sender,
            receivers=group.receivers,
            others=group.others,
        )
    )
