"""Inbound chat events, agents' replies and their state, and customers who opted out."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, delete, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from bridge.store.db import Database
from bridge.store.schema import chat_events, chat_messages, conversations, opt_outs, replies

# Reply states. `sending` is written before the gateway is called: whoever finds a reply in
# that state cannot know whether the SMS went, and must not send it again. `declined` is
# decided on the request path (never to be sent, `problem` says why) and waits for the worker
# to say so in the thread.
PLANNED, SENDING, SENT, UNKNOWN, REFUSED, BLOCKED, TOO_LONG, DECLINED = (
    "planned",
    "sending",
    "sent",
    "unknown",
    "refused",
    "blocked",
    "too_long",
    "declined",
)


async def record_event(
    database: Database,
    connection: AsyncConnection,
    *,
    platform: str,
    event_key: str,
    body: str,
    now: float,
) -> int | None:
    """Keep an inbound chat event; None when (platform, event_key) was stored before."""
    statement = (
        database.insert(chat_events)
        .values(
            platform=platform, event_key=event_key, status="received", body=body, received_at=now
        )
        .on_conflict_do_nothing(index_elements=["platform", "event_key"])
        .returning(chat_events.c.id)
    )
    return (await connection.execute(statement)).scalar_one_or_none()


async def set_event_status(connection: AsyncConnection, event_id: int, status: str) -> None:
    await connection.execute(
        update(chat_events).where(chat_events.c.id == event_id).values(status=status)
    )


async def event_body(connection: AsyncConnection, event_id: int) -> str | None:
    row = (
        await connection.execute(select(chat_events.c.body).where(chat_events.c.id == event_id))
    ).first()
    return str(row[0]) if row else None


async def conversation_of_thread(
    connection: AsyncConnection, destinations: list[str], chat: str, thread: str
) -> tuple[str, int] | None:
    """(destination, conversation id) of the bridged thread `thread` in `chat`, if any."""
    query = (
        select(conversations.c.destination, conversations.c.id)
        .where(
            conversations.c.destination.in_(destinations),
            conversations.c.chat == chat,
            conversations.c.thread == thread,
        )
        .order_by(conversations.c.id.desc())
    )
    return await _first_conversation(connection, query)


async def conversation_of_message(
    connection: AsyncConnection, destinations: list[str], chat: str, message: str
) -> tuple[str, int] | None:
    """(destination, conversation id) of a chat message the bridge posted, if any."""
    query = select(chat_messages.c.destination, chat_messages.c.conversation_id).where(
        chat_messages.c.destination.in_(destinations),
        chat_messages.c.chat == chat,
        chat_messages.c.message == message,
        chat_messages.c.conversation_id.is_not(None),
    )
    return await _first_conversation(connection, query)


async def _first_conversation(
    connection: AsyncConnection, query: Select[Any]
) -> tuple[str, int] | None:
    """The first (destination, conversation id) `query` finds, if any."""
    row = (await connection.execute(query.limit(1))).first()
    return (str(row[0]), int(row[1])) if row else None


@dataclass(frozen=True)
class Reply:
    id: int
    chat_event_id: int
    destination: str
    conversation_id: int
    chat: str
    message: str
    state: str
    messageid: str | None
    shown: str | None
    problem: str | None


_COLUMNS = (
    replies.c.id,
    replies.c.chat_event_id,
    replies.c.destination,
    replies.c.conversation_id,
    replies.c.chat,
    replies.c.message,
    replies.c.state,
    replies.c.messageid,
    replies.c.shown,
    replies.c.problem,
)


async def add(
    database: Database,
    connection: AsyncConnection,
    *,
    platform: str,
    chat_event_id: int,
    destination: str,
    conversation_id: int,
    chat: str,
    message: str,
    now: float,
    declined: str | None = None,
) -> int | None:
    """Plan the reply to one chat message, `planned`, or `declined` with that reason (never
    to be sent); None when that (platform, chat, message) has one already, whichever event or
    process planned it."""
    result = await connection.execute(
        database.insert(replies)
        .values(
            platform=platform,
            chat_event_id=chat_event_id,
            destination=destination,
            conversation_id=conversation_id,
            chat=chat,
            message=message,
            state=PLANNED if declined is None else DECLINED,
            problem=declined,
            created_at=now,
            updated_at=now,
        )
        .on_conflict_do_nothing(index_elements=["platform", "chat", "message"])
        .returning(replies.c.id)
    )
    reply_id = result.scalar_one_or_none()
    return None if reply_id is None else int(reply_id)


async def get(connection: AsyncConnection, reply_id: int, *, lock: bool = False) -> Reply | None:
    query = select(*_COLUMNS).where(replies.c.id == reply_id)
    if lock and connection.dialect.name == "postgresql":
        query = query.with_for_update()
    row = (await connection.execute(query)).first()
    return Reply(**row._mapping) if row else None


async def of_messageid(connection: AsyncConnection, messageid: str) -> Reply | None:
    row = (
        await connection.execute(select(*_COLUMNS).where(replies.c.messageid == messageid))
    ).first()
    return Reply(**row._mapping) if row else None


async def set_state(
    connection: AsyncConnection,
    reply_id: int,
    state: str,
    now: float,
    *,
    messageid: str | None = None,
    problem: str | None = None,
) -> None:
    values: dict[str, object] = {"state": state, "updated_at": now, "problem": problem}
    if messageid is not None:
        values["messageid"] = messageid
    await connection.execute(update(replies).where(replies.c.id == reply_id).values(**values))


async def set_shown(connection: AsyncConnection, reply_id: int, shown: str | None) -> None:
    await connection.execute(update(replies).where(replies.c.id == reply_id).values(shown=shown))


async def answered_between(
    connection: AsyncConnection, receiver: str, sender: str, since: float, until: float
) -> bool:
    """Whether an answer from the line `receiver` reached the customer `sender` (was accepted
    by the gateway) between `since` and `until`, from any destination."""
    query = (
        select(replies.c.id)
        .join(conversations, conversations.c.id == replies.c.conversation_id)
        .where(
            conversations.c.receiver == receiver,
            conversations.c.sender == sender,
            replies.c.state == SENT,
            replies.c.updated_at >= since,
            replies.c.updated_at <= until,
        )
        .limit(1)
    )
    return (await connection.execute(query)).first() is not None


async def opt_out(
    database: Database, connection: AsyncConnection, receiver: str, sender: str, now: float
) -> None:
    """The customer `sender` gets no further answers from the line `receiver`."""
    await connection.execute(
        database.insert(opt_outs)
        .values(receiver=receiver, sender=sender, at=now)
        .on_conflict_do_nothing(index_elements=["receiver", "sender"])
    )


async def opted_out(connection: AsyncConnection, receiver: str, sender: str) -> bool:
    row = (
        await connection.execute(
            select(opt_outs.c.at).where(
                opt_outs.c.receiver == receiver, opt_outs.c.sender == sender
            )
        )
    ).first()
    return row is not None


async def opt_in(connection: AsyncConnection, receiver: str, sender: str) -> None:
    """Undo `opt_out`: answers from the line reach the customer again."""
    await connection.execute(
        delete(opt_outs).where(opt_outs.c.receiver == receiver, opt_outs.c.sender == sender)
    )
