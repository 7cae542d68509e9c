"""Erasure's SQL: find and erase what is stored about one customer (`smsbridge forget`).

Rows that count something stay (events, statuses, jobs, alert groups, chat events); the
customer's content and number go from them. Conversations with their chat message links and
the replies sent in them, which exist only to tie a customer to chat threads, are deleted, and
so is the customer's opt-out.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from bridge.jobs import Payload, Unreadable, read_payload
from bridge.store.outbox import DONE
from bridge.store.retention import ERASED_PAYLOAD
from bridge.store.schema import (
    alert_groups,
    chat_events,
    chat_messages,
    conversations,
    events,
    message_status,
    opt_outs,
    outbox,
    replies,
    webhook_requests,
)

# Every table erasure writes to: where old copies of the customer's rows may be left on disk.
TABLES = (
    alert_groups,
    chat_events,
    chat_messages,
    conversations,
    events,
    message_status,
    opt_outs,
    outbox,
    replies,
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


@dataclass(frozen=True)
class StoredJob:
    id: int
    destination: str
    lane: str
    status: str
    payload: Payload | Unreadable


async def jobs_of(
    connection: AsyncConnection, event_ids: Collection[int], lanes: Collection[str]
) -> list[StoredJob]:
    """Jobs not erased yet that came from these events or are in these lanes."""
    found = []
    if event_ids:
        found.append(outbox.c.event_id.in_(list(event_ids)))
    if lanes:
        found.append(outbox.c.lane.in_(list(lanes)))
    if not found:
        return []
    columns = (outbox.c.id, outbox.c.destination, outbox.c.lane, outbox.c.status)
    rows = await connection.execute(
        select(*columns, outbox.c.kind, outbox.c.payload)
        .where(or_(*found), outbox.c.lane != ERASED_LANE)
        .order_by(outbox.c.id)
    )
    return [
        StoredJob(id_, destination, lane, status, read_payload(kind, payload))
        for id_, destination, lane, status, kind, payload in rows
    ]


async def erase_job(
    connection: AsyncConnection,
    job: StoredJob,
    payload: dict[str, Any] | None,
    now: float,
    *,
    lane: bool,
) -> bool:
    """Close the job if it was still to be delivered (or a dead letter that could be retried);
    with `payload`, store that JSON instead (the number taken out); with `lane`, erase the
    lane too (it holds the number). Returns whether the job was closed."""
    closing = job.status != DONE
    values: dict[str, Any] = {}
    if lane:
        values["lane"] = ERASED_LANE
    if payload is not None:
        values["payload"] = payload
    if closing:
        values.update(status=DONE, last_error=NOT_DELIVERED, finished_at=now, locked_until=None)
    if values:
        await connection.execute(update(outbox).where(outbox.c.id == job.id).values(**values))
    return closing


async def erase_statuses(connection: AsyncConnection, number: str, now: float) -> int:
    result = await connection.execute(
        update(message_status)
        .where(or_(message_status.c.receiver == number, message_status.c.sender == number))
        .values(sender="", receiver="", erased_at=now)
    )
    return int(result.rowcount)


@dataclass(frozen=True)
class Thread:
    """A customer conversation at a destination, and where its chat thread is."""

    id: int
    destination: str
    receiver: str
    chat: str | None
    thread: str | None


async def conversations_of(connection: AsyncConnection, number: str) -> list[Thread]:
    rows = await connection.execute(
        select(
            conversations.c.id,
            conversations.c.destination,
            conversations.c.receiver,
            conversations.c.chat,
            conversations.c.thread,
        )
        .where(conversations.c.sender == number)
        .order_by(conversations.c.id)
    )
    return [Thread(*row) for row in rows]


async def chat_messages_of(
    connection: AsyncConnection, conversation_ids: Collection[int]
) -> set[tuple[str, str]]:
    """(chat, message) of every chat message posted in these conversations."""
    if not conversation_ids:
        return set()
    rows = await connection.execute(
        select(chat_messages.c.chat, chat_messages.c.message).where(
            chat_messages.c.conversation_id.in_(list(conversation_ids))
        )
    )
    return {(str(chat), str(message)) for chat, message in rows}


async def delete_conversations(
    connection: AsyncConnection, conversation_ids: Collection[int]
) -> tuple[int, int]:
    """The conversations and their chat message links; returns how many of each."""
    if not conversation_ids:
        return 0, 0
    ids = list(conversation_ids)
    links = await connection.execute(
        delete(chat_messages).where(chat_messages.c.conversation_id.in_(ids))
    )
    deleted = await connection.execute(delete(conversations).where(conversations.c.id.in_(ids)))
    return int(deleted.rowcount), int(links.rowcount)


async def reply_events(connection: AsyncConnection, conversation_ids: Collection[int]) -> set[int]:
    """The chat events (agents' messages) of the replies sent in these conversations."""
    if not conversation_ids:
        return set()
    rows = await connection.execute(
        select(replies.c.chat_event_id).where(replies.c.conversation_id.in_(list(conversation_ids)))
    )
    return {int(event_id) for (event_id,) in rows}


async def delete_replies(connection: AsyncConnection, conversation_ids: Collection[int]) -> int:
    if not conversation_ids:
        return 0
    result = await connection.execute(
        delete(replies).where(replies.c.conversation_id.in_(list(conversation_ids)))
    )
    return int(result.rowcount)


@dataclass(frozen=True)
class StoredChatEvent:
    id: int
    platform: str
    body: str


async def chat_events_after(
    connection: AsyncConnection, after: int, limit: int
) -> list[StoredChatEvent]:
    """Chat events with their body still stored, in id order after `after`."""
    rows = await connection.execute(
        select(chat_events.c.id, chat_events.c.platform, chat_events.c.body)
        .where(chat_events.c.id > after, chat_events.c.erased_at.is_(None))
        .order_by(chat_events.c.id)
        .limit(limit)
    )
    return [StoredChatEvent(*row) for row in rows]


async def erase_chat_events(connection: AsyncConnection, ids: Collection[int], now: float) -> int:
    """Blank the bodies (what agents wrote); the rows stay, so a retried event is still known."""
    if not ids:
        return 0
    result = await connection.execute(
        update(chat_events)
        .where(chat_events.c.id.in_(list(ids)), chat_events.c.erased_at.is_(None))
        .values(body=ERASED_PAYLOAD, erased_at=now)
    )
    return int(result.rowcount)


async def delete_opt_outs(connection: AsyncConnection, number: str) -> int:
    result = await connection.execute(delete(opt_outs).where(opt_outs.c.sender == number))
    return int(result.rowcount)


@dataclass(frozen=True)
class AlertGroup:
    id: int
    group_key: str
    route: dict[str, list[str]] | None
    labels: dict[str, str]
    sender: str
    receivers: list[str]
    others: int


async def alert_groups_all(connection: AsyncConnection) -> Sequence[AlertGroup]:
    rows = await connection.execute(
        select(
            alert_groups.c.id,
            alert_groups.c.group_key,
            alert_groups.c.route,
            alert_groups.c.labels,
            alert_groups.c.sender,
            alert_groups.c.receivers,
            alert_groups.c.others,
        ).order_by(alert_groups.c.id)
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
