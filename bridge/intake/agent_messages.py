"""Agents' chat messages → replies to plan: parse a Slack event or Telegram update, decide,
then store and plan in one transaction (called on the request path: no chat or gateway call).

A message becomes a reply when it comes from a human, in a thread the bridge started (in a
Telegram reply chain: replying to any message of the chain, or under its root), at a
destination with `replies` on, from an allowed member, and does not start with the internal
prefix (`note:`), however formatted or quoted. Everything else is kept in `chat_events` with
why it was ignored. What an agent meant to send but may not (a member of another Slack
workspace, a member not named in `allow`, an anonymous Telegram admin where `allow` is set,
a bot command) is planned as a `declined` reply, so that the worker says in the thread why
nothing was sent; an internal note is never declined, whoever wrote it.
"""

from __future__ import annotations

import json
import logging
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from bridge.config import Config, Destination, Replies, SlackTarget, TelegramTarget
from bridge.jobs import ConversationKey, ReplyJob
from bridge.language import N_
from bridge.store import conversations as conversations_store
from bridge.store import facts as facts_store
from bridge.store import outbox as outbox_store
from bridge.store import replies as replies_store
from bridge.store import wakeups as wakeups_store
from bridge.store.db import Database

log = logging.getLogger(__name__)

Platform = Literal["slack", "telegram"]
_MEDIA = ("photo", "document", "video", "audio", "voice", "sticker", "animation", "video_note")
# Telegram's `from` for a group admin who remains anonymous; `sender_chat` is then the group.
ANONYMOUS_ADMIN = 1087968824


@dataclass(frozen=True)
class AgentMessage:
    """A human's chat message, platform-neutral. `thread` is Slack's `thread_ts` or a Telegram
    topic id; `replying_to` the Telegram message it answers (reply chains) and `chain_root` the
    first message of its reply chain (a supergroup's `message_thread_id` outside topics). `text`
    is as the platform sent it, but with Telegram's hidden link targets shown (`label (url)`).

    `team` is the Slack workspace of the author and `home` the one the event was delivered to;
    `anonymous` marks a Telegram admin writing as the group; `command` a Telegram message that
    is one bot command and nothing else."""

    platform: Platform
    chat: str
    message: str
    user: str
    text: str
    thread: str | None = None
    replying_to: str | None = None
    media: bool = False
    team: str | None = None
    home: str | None = None
    anonymous: bool = False
    command: bool = False
    chain_root: str | None = None


@dataclass(frozen=True)
class Ignored:
    """Not an answer at all (kept in `chat_events` with this reason, nothing said)."""

    why: str


@dataclass(frozen=True)
class Declined:
    """An answer that must not reach the customer; the thread is told `why`, which ends with
    ` — ` and the agent's next step (each a msgid, translated where the thread is told)."""

    why: str


# The step for a member not in `replies.allow` where notes have a prefix; `{prefix}` is
# filled where the thread is told.
ASK_OR_NOTE = N_(
    'ask one of them to answer; a message that starts with "{prefix}" stays between '
    "colleagues, without this note"
)


def slack_message(envelope: Mapping[str, Any]) -> AgentMessage | Ignored:
    """An Events API `event_callback` envelope → the agent's message, or why it is none."""
    event = envelope.get("event")
    if not isinstance(event, dict) or event.get("type") != "message":
        return Ignored(f"not a message event ({_kind(event)})")
    if event.get("bot_id") or event.get("bot_profile"):
        return Ignored("a bot's message")
    subtype = event.get("subtype")
    if subtype not in (None, "thread_broadcast", "file_share"):
        return Ignored(f"a {subtype} message")
    thread, ts, user = event.get("thread_ts"), event.get("ts"), event.get("user")
    if not thread or thread == ts:
        return Ignored("not in a thread")
    if not isinstance(user, str) or not isinstance(event.get("channel"), str):
        return Ignored("no user or channel")
    team = event.get("user_team") or event.get("team")
    home = envelope.get("team_id")
    return AgentMessage(
        "slack",
        event["channel"],
        str(ts),
        user,
        str(event.get("text") or ""),
        str(thread),
        media=bool(event.get("files")),
        team=str(team) if team else None,
        home=str(home) if home else None,
    )


def telegram_message(update: Mapping[str, Any]) -> AgentMessage | Ignored:
    """A Bot API update → the agent's message, or why it is none."""
    message = update.get("message")
    if not isinstance(message, dict):
        return Ignored(f"not a new message ({', '.join(k for k in update if k != 'update_id')})")
    sender, chat = message.get("from") or {}, message.get("chat") or {}
    anonymous = _anonymous_admin(sender, chat, message.get("sender_chat"))
    if "sender_chat" in message and not anonymous:
        return Ignored("sent on behalf of a channel or another chat")
    if sender.get("is_bot") and not anonymous:
        return Ignored("a bot's message")
    if isinstance(message.get("text"), str):
        raw, entities = message["text"], message.get("entities")
    else:
        raw, entities = str(message.get("caption") or ""), message.get("caption_entities")
    media = any(key in message for key in _MEDIA)
    if not raw and not media:
        return Ignored("a service message")
    thread_id = message.get("message_thread_id")
    topic = thread_id if message.get("is_topic_message") else None
    # Outside topics, a supergroup names the reply chain's first message: it still finds the
    # conversation when the message replied to is unknown or deleted (no `reply_to_message`).
    root = None if topic is not None else thread_id
    replied = message.get("reply_to_message") or {}
    replying_to = replied.get("message_id")
    if topic is None and replying_to is None and root is None:
        return Ignored("not in a thread")
    return AgentMessage(
        "telegram",
        str(chat.get("id")),
        str(message.get("message_id")),
        str(sender.get("id")),
        with_links(raw, entities),
        None if topic is None else str(topic),
        None if replying_to is None else str(replying_to),
        media,
        anonymous=anonymous,
        command=_only_a_command(raw, entities),
        chain_root=None if root is None else str(root),
    )


def _anonymous_admin(sender: Any, chat: Any, sender_chat: Any) -> bool:
    """An admin of the group writing as the group ("Remain anonymous"): not a bot, though its
    `from` is one. A channel's or another chat's `sender_chat` is not."""
    return (
        isinstance(sender_chat, dict)
        and sender.get("id") == ANONYMOUS_ADMIN
        and sender_chat.get("id") is not None
        and sender_chat.get("id") == chat.get("id")
    )


def _entities(entities: object, kind: str) -> list[dict[str, Any]]:
    """The well-formed entities of one type, in order; offsets count UTF-16 code units."""
    if not isinstance(entities, list):
        return []
    found = [
        entity
        for entity in entities
        if isinstance(entity, dict)
        and entity.get("type") == kind
        and isinstance(entity.get("offset"), int)
        and isinstance(entity.get("length"), int)
        and entity["offset"] >= 0
        and entity["length"] > 0
    ]
    return sorted(found, key=lambda entity: int(entity["offset"]))


def with_links(text: str, entities: object) -> str:
    """Telegram text with each `text_link` (a label whose http(s) target is hidden) written as
    `label (url)`, as the SMS has no other way to carry the target."""
    units = text.encode("utf-16-le")
    shown = bytearray()
    position = 0  # in UTF-16 code units
    for link in _entities(entities, "text_link"):
        start, end, url = link["offset"], link["offset"] + link["length"], link.get("url")
        if start < position or end * 2 > len(units) or not isinstance(url, str):
            continue
        if not url.lower().startswith(("http://", "https://")):
            continue
        label = units[start * 2 : end * 2].decode("utf-16-le", errors="replace")
        shown += units[position * 2 : end * 2]
        if label.strip() != url:
            shown += f" ({url})".encode("utf-16-le")
        position = end
    shown += units[position * 2 :]
    return shown.decode("utf-16-le", errors="replace")


def _only_a_command(text: str, entities: object) -> bool:
    """Whether the text is one bot command (`/start`, `/anything@SomeBot`) and nothing else."""
    length = len(text.encode("utf-16-le")) // 2
    return any(
        entity["offset"] == 0 and entity["length"] == length
        for entity in _entities(entities, "bot_command")
    )


# Formatting marks (Slack's bold, italic, strike, code), dropped before the prefix is looked
# for, wherever they are: `*no*te:` is sent as `note:` too.
_MARKS = frozenset("*_~`")
# What may precede the prefix without hiding it: whitespace and quote marks of any kind,
# Slack's escaped `>` included.
_LEADING = re.compile(r"^(?:\s|&gt;|[>\"'\u2018-\u201f\u00ab\u00bb\u2039\u203a\u300c-\u300f])+")


def is_internal_note(text: str, prefix: str) -> bool:
    """Whether `text` is an internal note: it starts with `prefix` as the customer would read
    it, case-insensitive, after leading whitespace, quote marks and formatting, invisible
    characters ignored. Works on Slack's markup and on plain text alike."""
    bare_prefix = _bare(prefix)
    return bool(bare_prefix) and _bare(text).startswith(bare_prefix)


def _bare(text: str) -> str:
    kept = "".join(c for c in text if c not in _MARKS and unicodedata.category(c) != "Cf")
    return _LEADING.sub("", kept).casefold()


def decide(
    message: AgentMessage, replies: Replies, own_team: str | None
) -> Ignored | Declined | None:
    """What becomes of a message in a bridged thread: None to send it, Ignored to drop it
    without a word (an internal note, whoever wrote it), Declined to refuse it and say why
    in the thread."""
    if replies.prefix and is_internal_note(message.text, replies.prefix):
        return Ignored("an internal note")
    if message.anonymous and replies.allow is not None:
        return Declined(
            N_(
                "it was written by an anonymous group admin, who cannot be checked against "
                "replies.allow"
            )
            + " — "
            + N_('turn off "Remain anonymous" and send it again')
        )
    if replies.allow is not None and message.user not in replies.allow:
        step = ASK_OR_NOTE if replies.prefix else N_("ask one of them to answer")
        return Declined(
            N_("only the members named in replies.allow answer customers here") + " — " + step
        )
    if replies.allow is None and message.team and own_team and message.team != own_team:
        return Declined(
            N_(
                "its author belongs to another organisation's Slack workspace (a shared "
                "channel); only this workspace's members may answer customers, and those "
                "named in replies.allow"
            )
            + " — "
            + N_("ask one of them to answer")
        )
    if message.command:
        return Declined(
            N_("it is a bot command, not an answer for the customer")
            + " — "
            + N_("write the answer without it")
        )
    return None


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
        if await facts_store.moved_to(connection, str(target.chat_id)) == chat:
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
        event_id = await replies_store.record_event(
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
        await replies_store.set_event_status(connection, event_id, why or "reply")
        if reply_id is not None:
            await wakeups_store.announce(database, connection)
    if why is not None:
        log.debug("%s event %s ignored: %s", platform, event_key, why)
    return Planned(reply_id=reply_id, ignored=why)


async def plan_telegram_update(
    database: Database, config: Config, *, bot: str, update: Mapping[str, Any], now: float
) -> Planned:
    """A Bot API update, whichever way it came (webhook or getUpdates): kept once per bot
    (`<bot id>:<update_id>`; Telegram numbers updates per bot), then planned as `plan` does.
    `bot` is "" only for the webhook path that names no bot."""
    key = f"{bot}:{update['update_id']}" if bot else str(update["update_id"])
    message = telegram_message(update)
    return await plan(
        database,
        config,
        platform="telegram",
        event_key=key,
        body=update,
        message=message,
        now=now,
    )


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
    found = await _conversation_of(connection, names, message)
    if found is None:
        return "not in a bridged thread", None
    destination_name, conversation_id = found
    if message.thread is None:
        # In a reply chain, whoever replies to this message answers the same customer.
        await conversations_store.join_chain(
            connection,
            destination=destination_name,
            conversation_id=conversation_id,
            chat=message.chat,
            message=message.message,
            now=now,
        )
    replies = config.destinations[destination_name].replies
    assert replies is not None
    own_team = None
    if message.platform == "slack":
        own_team = await facts_store.slack_team(connection, destination_name) or message.home
    decision = decide(message, replies, own_team)
    if isinstance(decision, Ignored):
        return decision.why, None
    declined = None if decision is None else decision.why
    reply_id = await _add_reply(
        database, connection, message, (destination_name, conversation_id), event_id, declined, now
    )
    if reply_id is None:
        return "already answered: this chat message gave a reply before", None
    return (None if declined is None else f"declined: {declined}"), reply_id


async def _add_reply(
    database: Database,
    connection: Any,
    message: AgentMessage,
    where: tuple[str, int],
    event_id: int,
    declined: str | None,
    now: float,
) -> int | None:
    """Store the reply to `message` in the conversation `where` (destination, id) and plan
    its job in the conversation's lane; None when this chat message has a reply already."""
    destination_name, conversation_id = where
    conversation = await conversations_store.get(connection, conversation_id)
    assert conversation is not None
    reply_id = await replies_store.add(
        database,
        connection,
        platform=message.platform,
        chat_event_id=event_id,
        destination=destination_name,
        conversation_id=conversation_id,
        chat=message.chat,
        message=message.message,
        now=now,
        declined=declined,
    )
    if reply_id is None:
        return None
    key = ConversationKey(receiver=conversation.receiver, sender=conversation.sender)
    await outbox_store.enqueue(
        database,
        connection,
        event_id=None,
        destination=destination_name,
        payload=ReplyJob(conversation=key, reply_id=reply_id),
        now=now,
    )
    return reply_id


async def _conversation_of(
    connection: Any, destinations: list[str], message: AgentMessage
) -> tuple[str, int] | None:
    """(destination, conversation id) of the bridged thread or reply chain the message is in:
    its topic or Slack thread; else the chain message it replies to (the bridge's posts and
    notes, agents' messages in the chain); else its chain's root."""
    if message.thread is not None:
        found = await replies_store.conversation_of_thread(
            connection, destinations, message.chat, message.thread
        )
        if found is not None:
            return found
    for reference in (message.replying_to, message.chain_root):
        if reference is None:
            continue
        found = await replies_store.conversation_of_message(
            connection, destinations, message.chat, reference
        ) or await replies_store.conversation_of_thread(
            connection, destinations, message.chat, reference
        )
        if found is not None:
            return found
    return None


def stored_message(platform: str, body: str) -> AgentMessage | Ignored:
    """The agent's message again, from the event kept in `chat_events`."""
    document = json.loads(body)
    return slack_message(document) if platform == "slack" else telegram_message(document)


def author_name(platform: str, body: str) -> str | None:
    """Who wrote a stored agent's message, as Telegram names them (first and last name, else
    @username; for an anonymous admin the group's title, as Telegram itself shows them);
    None for Slack, whose events name a member only by id."""
    if platform == "slack":
        return None
    message = json.loads(body).get("message")
    if not isinstance(message, dict):
        return None
    sender, sender_chat = message.get("from") or {}, message.get("sender_chat")
    if isinstance(sender_chat, dict) and _anonymous_admin(
        sender, message.get("chat") or {}, sender_chat
    ):
        return str(sender_chat.get("title") or "") or None
    full = " ".join(str(sender[key]) for key in ("first_name", "last_name") if sender.get(key))
    if full:
        return full
    return f"@{sender['username']}" if sender.get("username") else None


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
