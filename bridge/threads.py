"""Conversations and their chat threads: which thread a message goes to, posting its parts.

A conversation is (destination, receiver, sender). Its first message opens the thread (a
Telegram forum topic first, where configured); later messages go under it. After
`idle_after` of silence the next message opens a new conversation, hence a new thread.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from bridge.chat.base import ChatAdapter, Part, ThreadGone
from bridge.store import conversations as store
from bridge.store.conversations import ChatMessage, Conversation
from bridge.store.db import Database


async def current_conversation(
    database: Database,
    destination: str,
    receiver: str,
    sender: str,
    *,
    at: float,
    idle_after: float,
) -> Conversation:
    """The live conversation for this customer and line, or a new one after a quiet spell."""
    async with database.transaction() as connection:
        conversation = await store.latest(connection, destination, receiver, sender)
        if conversation is None or at - conversation.last_message_at > idle_after:
            conversation = await store.start(connection, destination, receiver, sender, at)
        return conversation


async def post_in_thread(
    database: Database,
    adapter: ChatAdapter,
    conversation: Conversation,
    parts: Sequence[Part],
    *,
    title: str,
    outbox_id: int,
    gateway_messageid: str | None,
    replied_to: str | None = None,
    at: float,
    now: float,
) -> Conversation:
    """Post every part not posted yet under the conversation's thread, recording each one.

    Each part is recorded as soon as the platform accepted it, so a retry after a partial
    failure (a 429 on part 2 of 3) does not post part 1 again. A deleted thread (Telegram
    topic) opens a new conversation once and carries on there.
    """
    async with database.transaction() as connection:
        already_sent = await store.sent_parts(connection, outbox_id)
    for index, part in enumerate(parts):
        if index in already_sent:
            continue
        try:
            conversation = await _ensure_thread(database, adapter, conversation, title)
            sent = await adapter.send(part, conversation.thread)
        except ThreadGone:
            async with database.transaction() as connection:
                conversation = await store.start(
                    connection,
                    conversation.destination,
                    conversation.receiver,
                    conversation.sender,
                    at,
                )
            conversation = await _ensure_thread(database, adapter, conversation, title)
            sent = await adapter.send(part, conversation.thread)
        async with database.transaction() as connection:
            if conversation.thread is None or conversation.chat is None:
                await store.set_thread(connection, conversation.id, sent.thread, sent.chat)
                conversation = replace(conversation, thread=sent.thread, chat=sent.chat)
            await store.record_message(
                connection,
                ChatMessage(
                    destination=conversation.destination,
                    chat=sent.chat,
                    message=sent.message,
                    conversation_id=conversation.id,
                    outbox_id=outbox_id,
                    part=index,
                    gateway_messageid=gateway_messageid,
                    replied_to=replied_to,
                ),
                now,
            )
            await store.touch(connection, conversation.id, at)
    return conversation


async def _ensure_thread(
    database: Database, adapter: ChatAdapter, conversation: Conversation, title: str
) -> Conversation:
    """Create the thread up front where the platform needs that (forum topics)."""
    if conversation.thread is not None:
        return conversation
    thread = await adapter.open_thread(title)
    if thread is None:
        return conversation  # the first message will be the thread
    async with database.transaction() as connection:
        # Stored at once: a crash now must not create a second topic on retry.
        await store.set_thread(connection, conversation.id, thread)
    return replace(conversation, thread=thread)
