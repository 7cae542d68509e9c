"""Telegram destination: HTML messages through python-telegram-bot's `Bot` (no Application).

A conversation is a forum topic (`topics=True`) or, in a plain group, a reply chain under the
conversation's first message. Customer text is untrusted: it is escaped with `html.escape`, so
it can neither break the message (400 "can't parse entities") nor inject formatting or links,
and made `inert`, so Telegram turns no `@name` into a mention nor `/cmd` into a command.
"""

from __future__ import annotations

import datetime as dt
import html
import json
import re
import warnings
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from http import HTTPStatus
from typing import Any, TypeVar

from telegram import Bot, LinkPreviewOptions, ReplyParameters
from telegram.constants import ParseMode
from telegram.error import (
    BadRequest,
    ChatMigrated,
    Forbidden,
    InvalidToken,
    NetworkError,
    RetryAfter,
    TelegramError,
    TimedOut,
)
from telegram.request import HTTPXRequest
from telegram.warnings import PTBDeprecationWarning

from bridge.chat.limits import TELEGRAM_TOPIC_NAME
from bridge.chat.spacing import Spacing, leaving
from bridge.errors import DeliveryError, Permanent, Reason, Retryable

from .base import (
    ChatMoved,
    Found,
    MessageGone,
    Origin,
    Part,
    Post,
    Sent,
    ThreadClosed,
    ThreadGone,
    TokenRefused,
    Tone,
)
from .split import cut
from .text import neutralise

MAX_TEXT = 4096  # per message, after entity parsing (counted in UTF-16 code units)
MARKER_ROOM = len("(99/99)\n")  # reserved in every part for the "(2/3)" marker
MIN_PIECE = 200  # start a new message rather than leave a sliver of text at the end of one
HEADING_LIMIT = 1000
_THREAD_GONE = ("message thread not found", "topic deleted", "topic_id_invalid", "topic_deleted")
_NO_PREVIEW = LinkPreviewOptions(is_disabled=True)
_TONE_MARKS = {Tone.PLAIN: "", Tone.FIRING: "🔴 ", Tone.RESOLVED: "🟢 "}
SILENT = "disable_notification"  # the `Part.extra` key of a part sent without notification

T = TypeVar("T")
Wrap = Callable[[str, bool], str]  # (piece, is last piece) -> HTML


def utf16_length(text: str) -> int:
    """Telegram measures text in UTF-16 code units (an emoji can count twice)."""
    return len(text.encode("utf-16-le")) // 2


def escape(text: str) -> str:
    """HTML-escape untrusted text for parse_mode=HTML (`<`, `>`, `&`)."""
    return html.escape(text, quote=False)


# An `@` or `/` starting a word, after any non-word character (`:@name` and `:/cmd` are
# entities too); not the slashes of `https://` nor the `@` of an e-mail.
_ENTITY_START = re.compile(r"(?<!\w)(?:@|(?<!:/)/)(?=\w)")
WORD_JOINER = "\u2060"


def inert(text: str) -> str:
    """Untrusted text Telegram shows as written and never turns into a live entity.

    Telegram's server makes mentions of `@name` and commands of `/cmd` even in HTML messages
    (a mention notifies that member). A word joiner (U+2060, invisible) after an `@` or `/`
    that starts a word stops that, and the words still read as the customer wrote them.
    Direction overrides and invisible characters go first (`neutralise`). Links stay links;
    their previews are off.
    """
    return _ENTITY_START.sub(lambda start: start[0] + WORD_JOINER, neutralise(text))


class _ServerError(NetworkError):
    """A 5xx from the Bot API. PTB reports those as a plain NetworkError; keep the status."""

    def __init__(self, status: int) -> None:
        super().__init__(f"Bot API answered HTTP {status}")
        self.status = status


class _Request(HTTPXRequest):
    async def do_request(self, *args: Any, **kwargs: Any) -> tuple[int, bytes]:
        status, payload = await super().do_request(*args, **kwargs)
        if status >= 500:
            raise _ServerError(status)
        if status == HTTPStatus.TOO_MANY_REQUESTS:
            retry_after = _flood_wait(payload)
            if retry_after is not None:
                # PTB 22 builds the same RetryAfter from this answer, and warns as it does
                # (its `retry_after` becomes a timedelta in PTB 23): build it here, quietly.
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", PTBDeprecationWarning)
                    raise RetryAfter(retry_after)
        return status, payload


def _flood_wait(payload: bytes) -> int | None:
    """The `parameters.retry_after` of a Bot API 429 answer, if it has one."""
    try:
        answer = json.loads(payload)
        seconds = answer["parameters"]["retry_after"]
    except (ValueError, TypeError, KeyError):
        return None
    return seconds if isinstance(seconds, int) else None


class _Message:
    """One part being assembled: HTML lines and their visible length."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.visible = 0

    def room(self) -> int:
        """Visible characters a further line may still have (its newline included)."""
        return MAX_TEXT - MARKER_ROOM - self.visible - (1 if self.lines else 0)

    def add(self, line: str, visible: int) -> None:
        self.visible += visible + (1 if self.lines else 0)
        self.lines.append(line)


class TelegramAdapter:
    """Posts to one Telegram chat, in forum topics or reply chains.

    A group that became a supergroup is followed (`ChatMoved`); a closed topic is reopened,
    or, when the bot may not, reported as `ThreadClosed` so a new topic is opened.
    """

    def __init__(
        self,
        name: str,
        token: str,
        chat_id: int,
        topics: bool,
        api_url: str = "https://api.telegram.org",
        timeout: float = 10.0,
        spacing: Spacing | None = None,
    ) -> None:
        self.name = name
        self.chat_id = chat_id
        self.topics = topics
        self._spacing = spacing  # sendMessage's pace per chat (pacing.Spacing)
        self._where = f"telegram destination '{name}' (chat {chat_id})"
        self._moved_from: set[int] = set()  # earlier ids of the chat (groups before upgrade)
        request = _Request(
            connect_timeout=timeout,
            read_timeout=timeout,
            write_timeout=timeout,
            pool_timeout=timeout,
        )
        try:
            self._bot = Bot(token, base_url=f"{api_url}/bot", request=request)
        except InvalidToken:
            raise TokenRefused(Reason.AUTH, f"{self._where}: no bot token configured") from None

    async def start(self) -> None:
        """Initialize the bot (getMe): a rejected token raises TokenRefused."""
        await self._call(self._bot.initialize())

    async def close(self) -> None:
        await self._bot.shutdown()

    def follow(self, new_chat_id: int) -> None:
        """Post to the chat's new id from now on (the group became a supergroup)."""
        if new_chat_id == self.chat_id:
            return
        self._moved_from.add(self.chat_id)
        self.chat_id = new_chat_id
        self._where = f"telegram destination '{self.name}' (chat {new_chat_id})"

    async def open_thread(self, title: str) -> str | None:
        """A new forum topic named `title` (topics mode), else None (reply chains)."""
        if not self.topics:
            return None
        name = neutralise(title).strip()[:TELEGRAM_TOPIC_NAME] or "Conversation"
        topic = await self._call(self._bot.create_forum_topic(chat_id=self.chat_id, name=name))
        return str(topic.message_thread_id)

    def render(self, post: Post) -> Sequence[Part]:
        """HTML parts, each ≤ 4096 visible characters; long quote/body continue in later parts.
        Each of `post.more` follows under its own context line. In a topic, a `titled` post
        leaves out what the topic's name says (heading and context); a `quiet` one is sent
        without a notification."""
        # Made inert before measuring: the word joiners count towards the 4096.
        mention = f"{post.mention} " if post.mention else ""
        named_by_topic = post.titled and self.topics
        heading = "" if named_by_topic else post.heading[:HEADING_LIMIT]
        heading = inert(_TONE_MARKS[post.tone] + heading) if heading else ""
        messages = [_Message()]
        if heading or mention:
            line = f"{mention}<b>{escape(heading)}</b>" if heading else mention.rstrip()
            messages[0].add(line, utf16_length(mention + heading))
        moment = (post.moment.text,) if post.moment is not None else ()
        first = replace(post, context=(*(() if named_by_topic else post.context), *moment))
        for entry in (first, *post.more):
            if entry.context:
                context = [inert(item) for item in entry.context]
                line = " · ".join(f"<i>{escape(item)}</i>" for item in context)
                visible = utf16_length(" · ".join(context))
                if messages[-1].lines and messages[-1].room() < visible:
                    messages.append(_Message())
                messages[-1].add(line, visible)
            self._words(messages, entry)
        total = len(messages)
        extra: dict[str, object] = {SILENT: True} if post.quiet else {}
        opening = messages[0].lines + ([f"<i>(1/{total})</i>"] if total > 1 else [])
        parts = [Part(text="\n".join(opening), extra=dict(extra))]
        for number, message in enumerate(messages[1:], start=2):
            text = "\n".join([f"<i>({number}/{total})</i>", *message.lines])
            parts.append(Part(text=text, extra=dict(extra)))
        return parts

    def _words(self, messages: list[_Message], post: Post) -> None:
        """The post's quote, then its body, poured into the messages."""
        if post.quote is not None:
            when = inert(post.quote.when)

            def blockquote(piece: str, last: bool) -> str:
                dated = f"\n<i>{escape(when)}</i>" if last else ""
                return f"<blockquote>{escape(piece)}{dated}</blockquote>"

            self._flow(messages, inert(post.quote.text), utf16_length("\n" + when), blockquote)
        if post.body.strip():
            self._flow(messages, inert(post.body), 0, lambda piece, last: escape(piece))

    @staticmethod
    def _flow(messages: list[_Message], raw: str, overhead: int, wrap: Wrap) -> None:
        """Pour `raw` into the messages, splitting it (raw, before escaping) where one is full."""
        while raw:
            room = messages[-1].room() - overhead
            if room < MIN_PIECE and messages[-1].lines:
                messages.append(_Message())
                continue
            length = cut(raw, room, utf16_length)
            if length == 0:
                raise ValueError("quote date too long to fit a Telegram message")
            piece, raw = raw[:length], raw[length:]
            last = not raw
            messages[-1].add(wrap(piece, last), utf16_length(piece) + (overhead if last else 0))

    async def send(self, part: Part, thread: str | None) -> Sent:
        """sendMessage into the topic, or as a reply to the conversation's first message.

        A closed topic is reopened and the part sent again; `ThreadClosed` when the bot may
        not reopen it.
        """
        try:
            message = await self._send_message(part, thread)
        except ThreadClosed:
            if not (thread and self.topics):
                raise
            await self._reopen(thread)
            message = await self._send_message(part, thread)
        message_id = str(message.message_id)
        return Sent(chat=str(self.chat_id), message=message_id, thread=thread or message_id)

    async def _reopen(self, thread: str) -> None:
        try:
            await self._call(
                self._bot.reopen_forum_topic(chat_id=self.chat_id, message_thread_id=int(thread))
            )
        except Permanent as refused:
            reason = refused.detail.removeprefix(f"{self._where}: ")
            if "topic_not_modified" in reason.lower():
                return  # someone reopened it meanwhile
            detail = f"{self._where}: topic {thread} is closed and the bot may not reopen it"
            raise ThreadClosed(Reason.FORBIDDEN, f"{detail} ({reason})") from None

    async def reply(self, sent: Sent, part: Part) -> Sent:
        """sendMessage replying to the message (`reply_parameters`), where it is: outside any
        topic, so in a forum the reply lands beside it in General."""
        message = await self._send_message(part, None, reply_to=sent.message)
        message_id = str(message.message_id)
        return Sent(chat=str(self.chat_id), message=message_id, thread=sent.thread)

    async def _send_message(
        self, part: Part, thread: str | None, reply_to: str | None = None
    ) -> Any:
        if thread and not self.topics:
            reply_to = thread  # a reply chain: each message answers the conversation's first
        async with leaving(self._spacing):
            return await self._call(
                self._bot.send_message(
                    chat_id=self.chat_id,
                    text=part.text,
                    parse_mode=ParseMode.HTML,
                    link_preview_options=_NO_PREVIEW,
                    disable_notification=True if part.extra.get(SILENT) else None,
                    message_thread_id=int(thread) if thread and self.topics else None,
                    reply_parameters=(
                        ReplyParameters(message_id=int(reply_to), allow_sending_without_reply=True)
                        if reply_to
                        else None
                    ),
                )
            )

    async def find_posted(self, origin: Origin, thread: str | None, since: float) -> Found | None:
        """Telegram keeps no metadata and lets a bot read no history: it cannot tell."""
        return None

    async def edit(self, sent: Sent, part: Part) -> None:
        """editMessageText; an edit that changes nothing counts as done. A message left in the
        group before it became a supergroup is `MessageGone` (the caller posts anew)."""
        if int(sent.chat) in self._moved_from:
            where = f"{self._where}: message to edit not found"
            raise MessageGone(Reason.NOT_FOUND, f"{where}: it stayed in chat {sent.chat}")
        try:
            await self._call(
                self._bot.edit_message_text(
                    part.text,
                    chat_id=int(sent.chat),
                    message_id=int(sent.message),
                    parse_mode=ParseMode.HTML,
                    link_preview_options=_NO_PREVIEW,
                ),
                chat=int(sent.chat),
            )
        except Permanent as error:
            if "message is not modified" not in error.detail.lower():
                raise

    async def react(self, sent: Sent, emoji: str) -> None:
        """setMessageReaction with one of Telegram's reaction emoji (👍 👀 🔥 ...). A message
        left in the group before it became a supergroup can no longer be marked: skipped."""
        if int(sent.chat) in self._moved_from:
            return
        await self._call(
            self._bot.set_message_reaction(
                chat_id=int(sent.chat), message_id=int(sent.message), reaction=emoji
            ),
            chat=int(sent.chat),
        )

    async def unreact(self, sent: Sent, emoji: str) -> None:
        """Nothing to do: a bot has one reaction per message, and the next replaces it."""

    async def plain_text(self, text: str) -> str:
        return text.strip()  # text and captions arrive plain; entities only format them

    async def _call(self, request: Awaitable[T], chat: int | None = None) -> T:
        """Await a Bot API call to `chat` (default: this destination's) and classify errors."""
        target = self.chat_id if chat is None else chat  # before a concurrent call moves it
        try:
            return await request
        except ChatMigrated as error:
            raise self._moved(target, int(error.new_chat_id)) from None
        except TelegramError as error:
            raise self._classify(error) from None

    def _moved(self, old: int, new: int) -> DeliveryError:
        """`old` became `new`: follow it (unless a concurrent call already did)."""
        if old != self.chat_id and new != self.chat_id:  # a message in some unrelated chat
            return Permanent(Reason.NOT_FOUND, f"{self._where}: chat {old} not found (moved)")
        where = f"telegram destination '{self.name}' (chat {old})"
        self.follow(new)
        detail = (
            f"{where}: the group became the supergroup {new}; posting there from now on. "
            f"Set chat_id to {new} in the config"
        )
        return ChatMoved(detail, str(old), str(new))

    def _classify(self, error: TelegramError) -> DeliveryError:
        # Details name the destination and Telegram's reason, never the text or the token
        # (PTB's InvalidToken message quotes the token, so it is not repeated).
        where = self._where
        message = error.message.lower()
        match error:
            case RetryAfter():
                seconds = _retry_after(error)
                return Retryable(Reason.RATE_LIMITED, f"{where}: flood control", seconds)
            case InvalidToken():
                return TokenRefused(Reason.AUTH, f"{where}: the bot token was rejected")
            case Forbidden():
                return Permanent(Reason.FORBIDDEN, f"{where}: {error.message}")
            case TimedOut():
                return Retryable(Reason.TIMEOUT, f"{where}: timed out")
            case BadRequest() if "topic_closed" in message:
                return ThreadClosed(Reason.FORBIDDEN, f"{where}: {error.message}")
            case BadRequest() if "chat not found" in message:
                detail = f"{where}: chat not found — check chat_id and add the bot to the chat"
                return Permanent(Reason.NOT_FOUND, detail)
            case BadRequest() if any(gone in message for gone in _THREAD_GONE):
                return ThreadGone(Reason.NOT_FOUND, f"{where}: {error.message}")
            case BadRequest() if "message to edit not found" in message:
                return MessageGone(Reason.NOT_FOUND, f"{where}: {error.message}")
            case BadRequest():
                return Permanent(Reason.BAD_REQUEST, f"{where}: {error.message}")
            case _ServerError():
                return Retryable(Reason.SERVER, f"{where}: Bot API answered HTTP {error.status}")
            case NetworkError():
                cause = type(error.__cause__ or error).__name__
                return Retryable(Reason.CONNECTION, f"{where}: network error ({cause})")
        return Permanent(Reason.BAD_REQUEST, f"{where}: {type(error).__name__}")


def _retry_after(error: RetryAfter) -> float:
    # PTB 22 warns on reading `retry_after` (an int now, a timedelta in PTB 23); either will do.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PTBDeprecationWarning)
        value: int | float | dt.timedelta = error.retry_after
    return value.total_seconds() if isinstance(value, dt.timedelta) else float(value)
