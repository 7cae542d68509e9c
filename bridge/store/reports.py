"""Delivery and read status per gateway message, and where the bridge showed that message."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from bridge.store.db import Database
from bridge.store.schema import chat_messages, message_status


@dataclass(frozen=True)
class MessageStatus:
    messageid: str
    delivery_code: int | None
    delivery_detail: int | None
    rank: int
    status_at: str | None
    read_at: str | None


_STATUS_COLUMNS = (
    message_status.c.messageid,
    message_status.c.delivery_code,
    message_status.c.delivery_detail,
    message_status.c.rank,
    message_status.c.status_at,
    message_status.c.read_at,
)


async def advance(
    database: Database,
    connection: AsyncConnection,
    *,
    messageid: str,
    sender: str,
    receiver: str,
    code: int | None,
    detail: int | None,
    rank: int,
    status_at: str,
    event_id: int,
    now: float,
) -> bool:
    """Record a delivery status unless the stored one ranks as high or higher.

    True when the status changed: a repeated or late lower-ranked report changes nothing.
    """
    values: dict[str, Any] = {
        "messageid": messageid,
        "sender": sender,
        "receiver": receiver,
        "delivery_code": code,
        "delivery_detail": detail,
        "rank": rank,
        "status_at": status_at,
        "event_id": event_id,
        "updated_at": now,
    }
    return await _upsert(
        database,
        connection,
        values,
        lambda excluded: {
            "sender": excluded.sender,
            "receiver": excluded.receiver,
            "delivery_code": excluded.delivery_code,
            "delivery_detail": excluded.delivery_detail,
            "rank": excluded.rank,
            "status_at": excluded.status_at,
            "event_id": excluded.event_id,
            "updated_at": excluded.updated_at,
            "erased_at": None,  # numbers stored again: pruned again in time
        },
        lambda excluded: message_status.c.rank < excluded.rank,
    )


async def mark_read(
    database: Database,
    connection: AsyncConnection,
    *,
    messageid: str,
    sender: str,
    receiver: str,
    read_at: str,
    event_id: int,
    now: float,
) -> bool:
    """Record when a message was read; True the first time only."""
    values: dict[str, Any] = {
        "messageid": messageid,
        "sender": sender,
        "receiver": receiver,
        "rank": 0,
        "updated_at": now,
        "read_at": read_at,
        "read_event_id": event_id,
        "read_shown": 0,
    }
    return await _upsert(
        database,
        connection,
        values,
        lambda excluded: {
            "read_at": excluded.read_at,
            "read_event_id": excluded.read_event_id,
            "read_shown": 0,
        },
        lambda _excluded: message_status.c.read_at.is_(None),
    )


async def _upsert(
    database: Database,
    connection: AsyncConnection,
    values: Mapping[str, Any],
    changes: Callable[[Any], Mapping[str, Any]],
    when: Callable[[Any], ColumnElement[bool]],
) -> bool:
    """Store a new status row, or apply `changes` (of the row offered, `excluded`) to the
    stored one `when` it holds; True when a row was written."""
    statement = database.insert(message_status).values(**values)
    excluded = statement.excluded
    statement = statement.on_conflict_do_update(
        index_elements=[message_status.c.messageid],
        set_=changes(excluded),
        where=when(excluded),
    ).returning(message_status.c.messageid)
    return (await connection.execute(statement)).first() is not None


async def count_read_shown(connection: AsyncConnection, messageid: str, shown: int) -> None:
    await connection.execute(
        update(message_status)
        .where(message_status.c.messageid == messageid)
        .values(read_shown=message_status.c.read_shown + shown)
    )


async def get(connection: AsyncConnection, messageid: str) -> MessageStatus | None:
    row = (
        await connection.execute(
            select(*_STATUS_COLUMNS).where(message_status.c.messageid == messageid)
        )
    ).first()
    return MessageStatus(*row) if row else None


@dataclass(frozen=True)
class ShownAt:
    """The first part of a chat message that shows a gateway message."""

    destination: str
    chat: str
    message: str


async def conversations_showing(
    connection: AsyncConnection, gateway_messageid: str, destination: str
) -> list[int]:
    """The conversations at `destination` where the gateway message was shown (an agent's
    reply) or answered (a customer's message replying to it), newest first."""
    rows = await connection.execute(
        select(chat_messages.c.conversation_id)
        .where(
            chat_messages.c.destination == destination,
            chat_messages.c.conversation_id.is_not(None),
            _shows(gateway_messageid),
        )
        .order_by(chat_messages.c.id.desc())
    )
    return list(dict.fromkeys(int(conversation) for (conversation,) in rows))


async def shown_at(connection: AsyncConnection, gateway_messageid: str) -> list[ShownAt]:
    """Where the bridge posted the gateway message `gateway_messageid`, or a customer's answer
    to it, one per destination."""
    rows = await connection.execute(
        select(chat_messages.c.destination, chat_messages.c.chat, chat_messages.c.message)
        .where(
            _shows(gateway_messageid),
            chat_messages.c.part == 0,
        )
        .order_by(chat_messages.c.id)
    )
    found: dict[str, ShownAt] = {}
    for destination, chat, message in rows:
        found.setdefault(destination, ShownAt(destination, chat, message))
    return list(found.values())


def _shows(gateway_messageid: str) -> ColumnElement[bool]:
    """A chat message that shows the gateway message (an agent's reply) or answers it (a
    customer's message replying to it)."""
    return or_(
        chat_messages.c.gateway_messageid == gateway_messageid,
        chat_messages.c.replied_to == gateway_messageid,
    )
