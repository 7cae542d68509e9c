"""Agents' chat messages → replies to plan: parse a Slack event or Telegram update, decide,
then store and plan in one transaction (called on the request path: no chat or gateway call).

A message becomes a reply when it comes from a human, in a thread the bridge started, at a
destination with `replies` on, from an allowed member, and does not start with the internal
prefix (`note:`). Everything else is kept in `chat_events` with why it was ignored.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from bridge.config import Config, Destination, SlackTarget, TelegramTarget
from bridge.jobs import ConversationKey, ReplyJob
from bridge.store import conversations as conversations_store
from bridge.store import facts, wakeups
from bridge.store import outbox as outbox_store
from bridge.store import replies as store
from bridge.store.db import Database

log = logging.getLogger(__name__)

Platform = Literal["slack", "telegram"]
_MEDIA = ("photo", "document", "video", "audio", "voice", "sticker", "animation", "video_note")


@dataclass(frozen=True)
class AgentMessage:
    """A human's chat message, platform-neutral. `thread` is Slack's `thread_ts` or a Telegram
    topic id; `replying_to` the Telegram message it answers (reply chains)."""

    platform: Platform
    chat: str
    message: str
    user: str
    text: str
    thread: str | None = None
    replying_to: str | None = None
    media: bool = False


@dataclass(frozen=True)
class Ignored:
    why: str


def slack_message(envelope: Mapping[str, Any]) -> AgentMessage | Ignored:
    """An Events API `event_callback` envelope → the agent's message, or why it is none."""
    event = envelope.get("event")
    if not isinstance(event, dict) or event.get("type") != "message":
        return Ignored(f"not a message event ({_kind(event)})")
    if event.get("bot_id") or event.get("bot_profile"):
        return Ignored("a bot's message")
    subtype = event.get("subtype")
    if subtype not in (None, "thread_broadcast"):
        return Ignored(f"a {subtype} message")
    thread, ts, user = event.get("thread_ts"), event.get("ts"), event.get("user")
    if not thread or thread == ts:
        return Ignored("not in a thread")
    if not isinstance(user, str) or not isinstance(event.get("channel"), str):
        return Ignored("no user or channel")
    return AgentMessage(
        "slack", event["channel"], str(ts), user, str(event.get("text") or ""), str(thread)
    )


def telegram_message(update: Mapping[str, Any]) -> AgentMessage | Ignored:
    """A Bot API update → the agent's message, or why it is none."""
    message = update.get("message")
    if not isinstance(message, dict):
        return Ignored(f"not a new message ({', '.join(k for k in update if k != 'update_id')})")
    sender, chat = message.get("from") or {}, message.get("chat") or {}
    if sender.get("is_bot") or "sender_chat" in message:
        return Ignored("a bot's message")
    text = message.get("text") or message.get("caption") or ""
    media = any(key in message for key in _MEDIA)
    if not text and not media:
        return Ignored("a service message")
    topic = message.get("message_thread_id") if message.get("is_topic_message") else None
    replied = message.get("reply_to_message") or {}
    replying_to = replied.get("message_id")
    if topic is None and replying_to is None:
        return Ignored("not in a thread")
    return AgentMessage(
        "telegram",
        str(chat.get("id")),
        str(message.get("message_id")),
        str(sender.get("id")),
        str(text),
        None if topic is None else str(topic),
        None if replying_to is None else str(replying_to),
        media,
    )


def _kind(event: object) -> str:
    if isinstance(event, dict):
        return str(event.get("type"))
    return "no event"


def _answering(config: Config, platform: Platform, chat: str) -> list[Destination]:
    """The destinations of this platform and chat whose agents may answer."""
    found = []
    for destination in config.destinations.values():
        target = destination.target
        if destination.replies is None or destination.kind != platform:
            continue
        if isinstance(target, SlackTarget) and target.channel != chat:
            continue
        if isinstance(target, TelegramTarget) and str(target.chat_id) != chat:
            continue
        found.append(destination)
    return found


async def _moved_here(connection: Any, config: Config, chat: str) -> list[Destination]:
    """Telegram destinations whose group became this supergroup (`bridge.delivery.moves`): their
    agents answer from the new chat before the config names it."""
    found = []
    for destination in config.destinations.values():
        target = destination.target
        if destination.replies is None or not isinstance(target, TelegramTarget):
            continue
        if await facts.moved_to(connection, str(target.chat_id)) == chat:
            found.append(destination)
    return found


@dataclass(frozen=True)
class Planned:
    """What became of an inbound chat event."""

    duplicate: bool = False
    reply_id: int | None = None
    ignored: str | None = None


async def plan(
    database: Database,
    config: Config,
    *,
    platform: Platform,
    event_key: str,
    body: Mapping[str, Any],
    message: AgentMessage | Ignored,
    now: float,
) -> Planned:
    """Keep the event (once: a retried event changes nothing), then plan the reply if any."""
    async with database.transaction() as connection:
        event_id = await store.record_event(
            database,
            connection,
            platform=platform,
            event_key=event_key,
            body=json.dumps(body, separators=(",", ":")),
            now=now,
        )
        if event_id is None:
            return Planned(duplicate=True)
        why, reply_id = await _plan_reply(database, connection, config, message, event_id, now)
        await store.set_event_status(connection, event_id, why or "reply")
        if reply_id is not None:
            await wakeups.announce(database, connection)
    if why is not None:
        log.debug("%s event %s ignored: %s", platform, event_key, why)
    return Planned(reply_id=reply_id, ignored=why)


async def _plan_reply(
    database: Database,
    connection: Any,
    config: Config,
    message: AgentMessage | Ignored,
    event_id: int,
    now: float,
) -> tuple[str | None, int | None]:
    if isinstance(message, Ignored):
        return message.why, None
    candidates = _answering(config, message.platform, message.chat)
    if not candidates and message.platform == "telegram":
        candidates = await _moved_here(connection, config, message.chat)
    if not candidates:
        return "no destination with replies on in this chat", None
    names = [destination.name for destination in candidates]
    found = None
    if message.thread is not None:
        found = await store.conversation_of_thread(connection, names, message.chat, message.thread)
    if found is None and message.replying_to is not None:
        found = await store.conversation_of_message(
            connection, names, message.chat, message.replying_to
        )
    if found is None:
        return "not in a bridged thread", None
    destination_name, conversation_id = found
    replies = config.destinations[destination_name].replies
    assert replies is not None
    if replies.allow is not None and message.user not in replies.allow:
        return "the member is not in replies.allow", None
    if replies.prefix and message.text.strip().lower().startswith(replies.prefix):
        return "an internal note", None
    conversation = await conversations_store.get(connection, conversation_id)
    assert conversation is not None
    reply_id = await store.add(
        database,
        connection,
        platform=message.platform,
        chat_event_id=event_id,
        destination=destination_name,
        conversation_id=conversation_id,
        chat=message.chat,
        message=message.message,
        now=now,
    )
    if reply_id is None:
        return "already answered: this chat message gave a reply before", None
    key = ConversationKey(receiver=conversation.receiver, sender=conversation.sender)
    await outbox_store.enqueue(
        database,
        connection,
        event_id=None,
        destination=destination_name,
        payload=ReplyJob(conversation=key, reply_id=reply_id),
        now=now,
    )
    return None, reply_id


def stored_message(platform: str, body: str) -> AgentMessage | Ignored:
    """The agent's message again, from the event kept in `chat_events`."""
    document = json.loads(body)
    return slack_message(document) if platform == "slack" else telegram_message(document)


def places(platform: str, body: str) -> set[tuple[str, str]]:
    """Every (chat, message or thread id) a stored chat event is about, whoever wrote it and
    whether or not it became a reply: how erasure finds the events of a customer's threads."""
    try:
        document = json.loads(body)
    except ValueError:
        return set()
    if not isinstance(document, dict):
        return set()
    found: set[tuple[str, str]] = set()
    if platform == "slack":
        event = document.get("event")
        if isinstance(event, dict):
            for item in (event, event.get("message"), event.get("previous_message")):
                if isinstance(item, dict):
                    channel = item.get("channel") or event.get("channel")
                    for key in ("ts", "thread_ts"):
                        if channel and item.get(key):
                            found.add((str(channel), str(item[key])))
            item = event.get("item")
            if isinstance(item, dict) and item.get("channel") and item.get("ts"):
                found.add((str(item["channel"]), str(item["ts"])))
        return found
    for message in document.values():
        if not isinstance(message, dict) or not isinstance(message.get("chat"), dict):
            continue
        chat = str(message["chat"].get("id"))
        replied = message.get("reply_to_message")
        ids = [
            message.get("message_id"),
            message.get("message_thread_id"),
            replied.get("message_id") if isinstance(replied, dict) else None,
        ]
        found.update((chat, str(id_)) for id_ in ids if id_ is not None)
    return found
