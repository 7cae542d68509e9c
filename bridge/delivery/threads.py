"""Conversations and their chat threads: which thread a message goes to, posting its parts.

A conversation is (destination, receiver, sender). Its first message opens the thread (a
Telegram forum topic first, where configured); later messages go under it. After
`idle_after` of silence the next message opens a new conversation, hence a new thread.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, replace

from sqlalchemy.ext.asyncio import AsyncConnection

from bridge.chat.base import ORIGIN, ChatAdapter, Origin, Part, Sent, ThreadClosed, ThreadGone
from bridge.delivery import render
from bridge.jobs import Delivery
from bridge.language import ENGLISH, Words
from bridge.store import conversations as conversations_store
from bridge.store.conversations import ChatMessage, Conversation
from bridge.store.db import Database
from bridge.store.shared import Writes


async def current_conversation(
    database: Database,
    destination: str,
    receiver: str,
    sender: str,
    *,
    at: float,
    idle_after: float,
    outbox_id: int,
) -> tuple[Conversation, bool]:
    """The live conversation for this customer and line, or a new one after a quiet spell;
    and whether a job other than `outbox_id` posted in it already (its thread is open). Read
    with other jobs' reads (`Database.shared`): only this job's lane changes it meanwhile."""
    found = await conversations_store.latest_posted(
        database.shared, destination, receiver, sender, outbox_id
    )
    if found is not None and at - found[0].last_message_at <= idle_after:
        return found

    async def start(connection: AsyncConnection) -> Conversation:
        return await conversations_store.start(connection, destination, receiver, sender, at)

    return await database.shared.run(start, atomic=False), False


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
    unsure_since: float | None = None,
    words: Words = ENGLISH,
    already_sent: Collection[int] | None = None,
) -> Conversation:
    """Post every part not posted yet under the conversation's thread, recording each one.
    `already_sent`: the job's parts posted before, when the caller read them with its own
    reads (None: read here).

    Each part is recorded as soon as the platform accepted it, so a retry after a partial
    failure (a 429 on part 2 of 3) does not post part 1 again. A deleted thread (Telegram
    topic), or one closed that the bot may not reopen, opens a new conversation once and
    carries on there; for a closed one the new thread first says why it exists (in `words`).

    Every part carries its `Origin`. `unsure_since`: an earlier attempt (since then) may have
    posted parts without recording them (a worker killed mid-post); each part is first looked
    for on the platform, and one found is recorded instead of posted again.
    """
    if already_sent is None:
        async with database.transaction() as connection:
            already_sent = await conversations_store.sent_parts(connection, outbox_id)
    for index, part in enumerate(parts):
        if index in already_sent:
            continue
        origin = Origin(outbox_id, index)
        part = Part(part.text, {**part.extra, ORIGIN: origin})
        try:
            conversation = await _ensure_thread(database, adapter, conversation, title)
            found = None
            if unsure_since is not None:
                found = await adapter.find_posted(origin, conversation.thread, unsure_since)
            sent = found.sent if found else await adapter.send(part, conversation.thread)
        except ThreadGone as gone:
            conversation = await _elsewhere(database, adapter, conversation, gone, title, at, words)
            sent = await adapter.send(part, conversation.thread)
        shown = [Shown(outbox_id, gateway_messageid, replied_to, at)]
        conversation = await _record(database, conversation, sent, shown, now, part=index)
    return conversation


async def post_aside(
    delivery: Delivery,
    conversation: Conversation,
    parts: Sequence[Part],
    *,
    gateway_messageid: str | None,
) -> None:
    """Post the delivered job's lines that are not the customer's own words (a read line, an
    answer shown from another destination, a failed delivery's note) in the conversation's
    thread, recorded as any post is; they keep the conversation alive no longer: only
    customer messages do."""
    await post_in_thread(
        delivery.database,
        delivery.adapter,
        conversation,
        parts,
        title=render.thread_title(
            conversation.sender, conversation.receiver, None, delivery.config
        ),
        outbox_id=delivery.job.id,
        gateway_messageid=gateway_messageid,
        at=conversation.last_message_at,
        now=delivery.now(),
        unsure_since=delivery.job.unsure_since,
        words=delivery.words,
    )


async def post_note(
    database: Database,
    adapter: ChatAdapter,
    conversation: Conversation,
    parts: Sequence[Part],
    *,
    now: float,
) -> None:
    """Post the bridge's note to the agents under the conversation's thread (none: nothing
    to add to), each part recorded as one of the conversation's chat messages, so that a reply
    to it in a reply chain is an answer to that customer. A note keeps nothing alive."""
    if conversation.thread is None:
        return
    for index, part in enumerate(parts):
        sent = await adapter.send(part, conversation.thread)
        message = _chat_message(conversation, sent, index)
        await database.shared.write(Writes([conversations_store.message_recorded(message, now)]))


def _chat_message(
    conversation: Conversation, sent: Sent, part: int, shown: Shown | None = None
) -> ChatMessage:
    """Part `part` of a chat message in the conversation's thread, as recorded: showing the
    gateway message of `shown`, or a note of the bridge's own (None)."""
    return ChatMessage(
        destination=conversation.destination,
        chat=sent.chat,
        message=sent.message,
        conversation_id=conversation.id,
        outbox_id=None if shown is None else shown.outbox_id,
        part=part,
        gateway_messageid=None if shown is None else shown.gateway_messageid,
        replied_to=None if shown is None else shown.replied_to,
    )


@dataclass(frozen=True)
class Shown:
    """A message a combined post shows: its outbox job and what its chat message records."""

    outbox_id: int
    gateway_messageid: str | None
    replied_to: str | None
    at: float  # when the message was received: keeps the conversation alive


async def post_combined(
    database: Database,
    adapter: ChatAdapter,
    conversation: Conversation,
    shown: Sequence[Shown],
    render_part: Callable[[Sequence[Shown], bool], Part],
    *,
    title: str,
    now: float,
    unsure_since: float | None = None,
    words: Words = ENGLISH,
) -> Conversation:
    """Post several messages of the conversation as one chat message, recording each of
    them against it (`ChatMessage` of part 0 per job), so reports, read lines and replies
    find it as they find a message posted alone.

    `render_part(messages, untouched)` makes the one part that shows `messages`; `untouched`
    is False once some of the messages were found posted (the rest then opens no thread).
    `unsure_since`: an earlier attempt may have posted some of them without recording it
    (a worker killed mid-post, a timeout); posts showing them are looked for first, and what
    they show is recorded instead of posted again. Only what no post shows yet is posted.
    """
    async with database.transaction() as connection:
        done = await conversations_store.with_parts_sent(
            connection, [entry.outbox_id for entry in shown]
        )
    remaining = [entry for entry in shown if entry.outbox_id not in done]
    untouched = not done
    while remaining and unsure_since is not None:
        wanted = _origin(remaining)
        try:
            conversation = await _ensure_thread(database, adapter, conversation, title)
            found = await adapter.find_posted(wanted, conversation.thread, unsure_since)
        except ThreadGone:
            break  # the thread is gone, and with it whatever was posted in it
        if found is None:
            break
        matched = [entry for entry in remaining if entry.outbox_id in found.origin.jobs]
        if not matched:
            break
        conversation = await _record(database, conversation, found.sent, matched, now)
        remaining = [entry for entry in remaining if entry not in matched]
        untouched = False
    if not remaining:
        return conversation
    part = render_part(remaining, untouched)
    part = Part(part.text, {**part.extra, ORIGIN: _origin(remaining)})
    try:
        conversation = await _ensure_thread(database, adapter, conversation, title)
        sent = await adapter.send(part, conversation.thread)
    except ThreadGone as gone:
        conversation = await _elsewhere(
            database, adapter, conversation, gone, title, remaining[0].at, words
        )
        sent = await adapter.send(part, conversation.thread)
    return await _record(database, conversation, sent, remaining, now)


def _origin(shown: Sequence[Shown]) -> Origin:
    first, *later = shown
    return Origin(first.outbox_id, 0, tuple(entry.outbox_id for entry in later))


async def _record(
    database: Database,
    conversation: Conversation,
    sent: Sent,
    shown: Sequence[Shown],
    now: float,
    part: int = 0,
) -> Conversation:
    """One chat message (`part` of its post) shows these messages: record it for each, in
    one transaction (shared with other jobs' records: `Database.shared`)."""

    recorded, writes = conversation, []
    if recorded.thread is None or recorded.chat is None:
        writes.append(conversations_store.thread_set(recorded.id, sent.thread, sent.chat))
        recorded = replace(recorded, thread=sent.thread, chat=sent.chat)
    for entry in shown:
        message = _chat_message(recorded, sent, part, entry)
        writes.append(conversations_store.message_recorded(message, now))
    writes.append(conversations_store.touched(recorded.id, max(entry.at for entry in shown)))
    await database.shared.write(Writes(writes))
    return recorded


async def _elsewhere(
    database: Database,
    adapter: ChatAdapter,
    conversation: Conversation,
    gone: ThreadGone,
    title: str,
    at: float,
    words: Words,
) -> Conversation:
    """The conversation's thread is gone (a deleted topic) or closed for good: a new
    conversation with a new thread, whose first words say why (in `words`) when the old one
    was closed."""
    async with database.transaction() as connection:
        conversation = await conversations_store.start(
            connection,
            conversation.destination,
            conversation.receiver,
            conversation.sender,
            at,
        )
    conversation = await _ensure_thread(database, adapter, conversation, title)
    if isinstance(gone, ThreadClosed):
        for note in adapter.render(render.thread_closed_post(words)):
            await adapter.send(note, conversation.thread)
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
    # Stored at once: a crash now must not create a second topic on retry.
    await database.shared.write(Writes([conversations_store.thread_set(conversation.id, thread)]))
    return replace(conversation, thread=thread)
