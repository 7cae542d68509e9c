"""Conversations, their chat threads, and every chat message posted in them.

The statements the worker runs for every message it posts are built once, with bind
parameters: building one and keying it for SQLAlchemy's compiled cache cost as much CPU as
running it (`docs/benchmarks.md`).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from sqlalchemy import String, bindparam, exists, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from bridge.store.schema import chat_messages, conversations
from bridge.store.shared import SharedTransactions, Write


@dataclass(frozen=True)
class Conversation:
    id: int
    destination: str
    receiver: str
    sender: str
    chat: str | None
    thread: str | None
    started_at: float
    last_message_at: float


_COLUMNS = (
    conversations.c.id,
    conversations.c.destination,
    conversations.c.receiver,
    conversations.c.sender,
    conversations.c.chat,
    conversations.c.thread,
    conversations.c.started_at,
    conversations.c.last_message_at,
)


_LATEST = (
    select(*_COLUMNS)
    .where(
        conversations.c.destination == bindparam("destination"),
        conversations.c.receiver == bindparam("receiver"),
        conversations.c.sender == bindparam("sender"),
    )
    .order_by(conversations.c.id.desc())
    .limit(1)
)
_POSTED_BY_OTHERS = exists().where(
    chat_messages.c.conversation_id == conversations.c.id,
    chat_messages.c.outbox_id != bindparam("outbox_id"),
)
_LATEST_POSTED = _LATEST.add_columns(_POSTED_BY_OTHERS)


async def latest(
    connection: AsyncConnection, destination: str, receiver: str, sender: str
) -> Conversation | None:
    values = {"destination": destination, "receiver": receiver, "sender": sender}
    row = (await connection.execute(_LATEST, values)).first()
    return Conversation(*row) if row else None


async def latest_posted(
    shared: SharedTransactions, destination: str, receiver: str, sender: str, outbox_id: int
) -> tuple[Conversation, bool] | None:
    """`latest`, and whether a job other than `outbox_id` already posted in it (so that one
    does not open its thread): one statement, read before every inbox post, with the other
    jobs' reads and writes (`SharedTransactions.fetch`)."""
    values = {
        "destination": destination,
        "receiver": receiver,
        "sender": sender,
        "outbox_id": outbox_id,
    }
    rows = await shared.fetch(_LATEST_POSTED, values)
    return (Conversation(*rows[0][:-1]), bool(rows[0][-1])) if rows else None


async def other_destinations(
    connection: AsyncConnection, receiver: str, sender: str, *, besides: str
) -> list[str]:
    """The destinations other than `besides` that hold a conversation with this customer on
    this line, in name order."""
    rows = await connection.execute(
        select(conversations.c.destination)
        .where(
            conversations.c.receiver == receiver,
            conversations.c.sender == sender,
            conversations.c.destination != besides,
        )
        .distinct()
        .order_by(conversations.c.destination)
    )
    return [str(destination) for (destination,) in rows]


async def get(connection: AsyncConnection, conversation_id: int) -> Conversation | None:
    row = (
        await connection.execute(select(*_COLUMNS).where(conversations.c.id == conversation_id))
    ).first()
    return Conversation(*row) if row else None


async def start(
    connection: AsyncConnection, destination: str, receiver: str, sender: str, at: float
) -> Conversation:
    """Open a new conversation; its thread is set once the first message or topic exists."""
    row = (
        await connection.execute(
            insert(conversations)
            .values(
                destination=destination,
                receiver=receiver,
                sender=sender,
                started_at=at,
                last_message_at=at,
            )
            .returning(*_COLUMNS)
        )
    ).one()
    return Conversation(*row)


_SET_THREAD = (
    update(conversations)
    .where(conversations.c.id == bindparam("conversation_id"))
    .values(
        thread=bindparam("new_thread"),
        chat=func.coalesce(bindparam("new_chat", type_=String), conversations.c.chat),
    )
)


def thread_set(conversation_id: int, thread: str, chat: str | None = None) -> Write:
    """The conversation's thread is `thread` (in `chat`; None: the chat it has)."""
    return _SET_THREAD, {"conversation_id": conversation_id, "new_thread": thread, "new_chat": chat}


async def forget_threads_in(connection: AsyncConnection, destination: str, chat: str) -> None:
    """Conversations whose threads stay behind in a chat that moved start a new thread on
    their next message (a reply chain cannot follow a group into its supergroup)."""
    await connection.execute(
        update(conversations)
        .where(conversations.c.destination == destination, conversations.c.chat == chat)
        .values(thread=None, chat=None)
    )


_TOUCH = (
    update(conversations)
    .where(
        conversations.c.id == bindparam("conversation_id"),
        conversations.c.last_message_at < bindparam("at"),
    )
    .values(last_message_at=bindparam("at"))
)


def touched(conversation_id: int, at: float) -> Write:
    """The conversation's last message came at `at` (unless a later one is known)."""
    return _TOUCH, {"conversation_id": conversation_id, "at": at}


async def live_conversations(
    connection: AsyncConnection, customer: str, *, since: float
) -> list[Conversation]:
    """The latest conversation with `customer` at each destination, if active since `since`
    and its thread exists."""
    rows = await connection.execute(
        select(*_COLUMNS)
        .where(
            conversations.c.sender == customer,
            conversations.c.last_message_at >= since,
            conversations.c.thread.is_not(None),
        )
        .order_by(conversations.c.id.desc())
    )
    latest: dict[str, Conversation] = {}
    for row in rows:
        conversation = Conversation(*row)
        latest.setdefault(conversation.destination, conversation)
    return list(latest.values())


@dataclass(frozen=True)
class ChatMessage:
    destination: str
    chat: str
    message: str
    conversation_id: int | None
    outbox_id: int | None
    part: int
    gateway_messageid: str | None
    replied_to: str | None = None  # the gateway message it answers (`orig_messageid`)


_RECORD = insert(chat_messages)


def message_recorded(message: ChatMessage, now: float) -> Write:
    """The chat message is recorded (at `now`)."""
    return _RECORD, {
        "destination": message.destination,
        "chat": message.chat,
        "message": message.message,
        "conversation_id": message.conversation_id,
        "outbox_id": message.outbox_id,
        "part": message.part,
        "gateway_messageid": message.gateway_messageid,
        "replied_to": message.replied_to,
        "created_at": now,
    }


async def record_message(connection: AsyncConnection, message: ChatMessage, now: float) -> None:
    await connection.execute(*message_recorded(message, now))


async def join_chain(
    connection: AsyncConnection,
    *,
    destination: str,
    conversation_id: int,
    chat: str,
    message: str,
    now: float,
) -> None:
    """Make an agent's chat message one of the conversation's, once: in a reply chain, a
    reply to it belongs to the conversation as a reply to the bridge's own posts does."""
    known = await connection.execute(
        select(chat_messages.c.id)
        .where(
            chat_messages.c.destination == destination,
            chat_messages.c.chat == chat,
            chat_messages.c.message == message,
        )
        .limit(1)
    )
    if known.first() is not None:
        return
    await record_message(
        connection,
        ChatMessage(
            destination=destination,
            chat=chat,
            message=message,
            conversation_id=conversation_id,
            outbox_id=None,
            part=0,
            gateway_messageid=None,
        ),
        now,
    )


async def message_showing(
    connection: AsyncConnection, conversation_id: int, gateway_messageid: str
) -> tuple[str, str] | None:
    """(chat, message) of the first part the bridge posted in the conversation that shows
    the gateway message `gateway_messageid`, if any."""
    row = (
        await connection.execute(
            select(chat_messages.c.chat, chat_messages.c.message)
            .where(
                chat_messages.c.conversation_id == conversation_id,
                chat_messages.c.gateway_messageid == gateway_messageid,
                chat_messages.c.part == 0,
            )
            .order_by(chat_messages.c.id)
            .limit(1)
        )
    ).first()
    return (str(row[0]), str(row[1])) if row else None


_SENT_PARTS = select(chat_messages.c.part).where(
    chat_messages.c.outbox_id == bindparam("outbox_id")
)


async def sent_parts(connection: AsyncConnection, outbox_id: int) -> set[int]:
    """Parts of a job already posted: a retry after a partial failure skips them."""
    rows = await connection.execute(_SENT_PARTS, {"outbox_id": outbox_id})
    return {int(part) for (part,) in rows}


async def with_parts_sent(connection: AsyncConnection, outbox_ids: Collection[int]) -> set[int]:
    """Which of these jobs have any part posted already (a combined post's retry skips them)."""
    rows = await connection.execute(
        select(chat_messages.c.outbox_id)
        .where(chat_messages.c.outbox_id.in_(list(outbox_ids)))
        .distinct()
    )
    return {int(outbox_id) for (outbox_id,) in rows}
