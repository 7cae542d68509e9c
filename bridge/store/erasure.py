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

from sqlalchemy import Column, Select, delete, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from bridge.jobs import Payload, Unreadable, read_payload
from bridge.store.outbox import DONE
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
ERASED_PAYLOAD = "{}"
NOT_DELIVERED = "not delivered: erased on request (smsbridge forget)"


@dataclass(frozen=True)
class UnerasedEvent:
    id: int
    request_id: int
    status: str
    payload: str


async def events_after(connection: AsyncConnection, after: int, limit: int) -> list[UnerasedEvent]:
    """Events with content still stored, in id order after `after`."""
    columns = (events.c.id, events.c.request_id, events.c.status, events.c.payload)
    return [UnerasedEvent(*row) for row in await _unerased_after(connection, columns, after, limit)]


async def erase_events(connection: AsyncConnection, ids: Collection[int], now: float) -> int:
    """Blank the events' content (text and numbers); the rows stay, so a retried webhook is
    still known. Returns how many were erased now."""
    return await _erase(connection, events.c.id, ids, now, payload=ERASED_PAYLOAD)


async def rewrite_waiting(connection: AsyncConnection, body_id: int, raw: bytes | None) -> bool:
    """Replace a body not planned yet with `raw`, or delete it (None); False when the intake
    planned it meanwhile (its events are then stored, and erased as those are)."""
    waiting = (webhook_requests.c.id == body_id) & webhook_requests.c.planned_at.is_(None)
    if raw is None:
        result = await connection.execute(delete(webhook_requests).where(waiting))
    else:
        result = await connection.execute(update(webhook_requests).where(waiting).values(body=raw))
    return bool(result.rowcount)


async def delete_bodies_of(connection: AsyncConnection, event_ids: Collection[int]) -> int:
    """Delete the raw bodies these events came in (a body may hold other customers' events
    too: those keep their stored copy); returns how many."""
    if not event_ids:
        return 0
    requests = select(events.c.request_id).where(events.c.id.in_(list(event_ids))).distinct()
    return await _delete(connection, webhook_requests.c.id, requests)


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


async def statuses_of(connection: AsyncConnection, number: str) -> list[str]:
    """The messageids of the delivery statuses that name this number."""
    rows = await connection.execute(
        select(message_status.c.messageid).where(
            or_(message_status.c.receiver == number, message_status.c.sender == number)
        )
    )
    return [str(messageid) for (messageid,) in rows]


async def erase_statuses(
    connection: AsyncConnection, messageids: Collection[str], now: float
) -> int:
    """Take the numbers out of these delivery statuses; returns how many were erased now."""
    return await _erase(
        connection, message_status.c.messageid, messageids, now, sender="", receiver=""
    )


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
    links = await _delete(connection, chat_messages.c.conversation_id, ids)
    return await _delete(connection, conversations.c.id, ids), links


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
    return await _delete(connection, replies.c.conversation_id, list(conversation_ids))


async def _delete(
    connection: AsyncConnection, key: Column[Any], keys: list[Any] | Select[Any]
) -> int:
    """Delete the rows of `key`'s table whose key is one of `keys`; returns how many."""
    result = await connection.execute(delete(key.table).where(key.in_(keys)))
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
    columns = (chat_events.c.id, chat_events.c.platform, chat_events.c.body)
    return [
        StoredChatEvent(*row) for row in await _unerased_after(connection, columns, after, limit)
    ]


async def erase_chat_events(connection: AsyncConnection, ids: Collection[int], now: float) -> int:
    """Blank the bodies (what agents wrote); the rows stay, so a retried event is still known."""
    return await _erase(connection, chat_events.c.id, ids, now, body=ERASED_PAYLOAD)


async def _erase(
    connection: AsyncConnection,
    key: Column[Any],
    keys: Collection[Any],
    now: float,
    **blanks: str,
) -> int:
    """Overwrite `blanks` in the rows of `key`'s table with these keys not erased yet, and
    mark them erased; returns how many."""
    if not keys:
        return 0
    table = key.table
    result = await connection.execute(
        update(table)
        .where(key.in_(list(keys)), table.c.erased_at.is_(None))
        .values(erased_at=now, **blanks)
    )
    return int(result.rowcount)


async def _unerased_after(
    connection: AsyncConnection, columns: tuple[Column[Any], ...], after: int, limit: int
) -> list[tuple[Any, ...]]:
    """`columns` (the first one the id) of the rows not erased yet, in id order after `after`."""
    table = columns[0].table
    query = (
        select(*columns)
        .where(table.c.id > after, table.c.erased_at.is_(None))
        .order_by(table.c.id)
        .limit(limit)
    )
    return [tuple(row) for row in await connection.execute(query)]


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
