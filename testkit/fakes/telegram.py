"""A fake Telegram Bot API speaking the real wire format, for driving python-telegram-bot.

    with FakeTelegram() as telegram:
        bot = Bot(FakeTelegram.TOKEN, base_url=telegram.url + "/bot")
        telegram.set_forbidden(-1001)
        ...
        assert telegram.messages(-1002)[0].message_thread_id == 2

It validates what Telegram validates and the bridge depends on: HTML parse mode (supported tags,
nesting, entities), 1-4096 characters after entity parsing, existing topics and messages. Like
Telegram's server it finds mentions, bot commands, hashtags and links in the plain text
(`TelegramMessage.entities`), a little more eagerly than Telegram does.
Switches apply per chat, or to every chat when `chat_id` is None; flip them from any thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import json
import re
import threading
import time
from collections import defaultdict, deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send
from telegram.constants import ReactionEmoji

from .server import FakePlatform, FakeServer

MAX_TEXT = 4096
_TOKEN_SHAPE = re.compile(r"\d+:[A-Za-z0-9_-]+")
_NOT_MODIFIED = (
    "Bad Request: message is not modified: specified new message content and reply markup are "
    "exactly the same as a current content and reply markup of the message"
)
_JSON_FIELDS = ("reply_parameters", "link_preview_options", "reaction", "reply_markup")
_INT_FIELDS = ("message_id", "message_thread_id")
# The `from` of a message an admin sent while "Remain anonymous" is on; its `sender_chat` is
# the group itself.
GROUP_ANONYMOUS_BOT: dict[str, Any] = {
    "id": 1087968824,
    "is_bot": True,
    "first_name": "Group",
    "username": "GroupAnonymousBot",
}


@dataclass(frozen=True)
class TelegramMessage:
    """An accepted sendMessage. `plain_text` is the text after entity parsing."""

    chat_id: int
    message_id: int
    message_thread_id: int | None
    reply_to_message_id: int | None
    text: str
    plain_text: str
    parse_mode: str | None
    link_preview_disabled: bool
    at: float  # arrival, time.monotonic()
    params: dict[str, Any] = field(repr=False, default_factory=dict)
    entities: tuple[tuple[str, str], ...] = ()  # (type, text) found in the plain text


@dataclass(frozen=True)
class TelegramTopic:
    """A forum topic created with createForumTopic."""

    chat_id: int
    message_thread_id: int
    name: str
    at: float


@dataclass(frozen=True)
class TelegramEdit:
    """An accepted editMessageText."""

    chat_id: int
    message_id: int
    text: str
    plain_text: str
    parse_mode: str | None
    at: float


@dataclass(frozen=True)
class TelegramReaction:
    """An accepted setMessageReaction (`emoji` is empty when reactions were removed)."""

    chat_id: int
    message_id: int
    emoji: tuple[str, ...]
    at: float


@dataclass(frozen=True)
class TelegramCall:
    """Every request the fake answered, accepted or not."""

    method: str
    chat_id: int | str | None
    status: int
    description: str | None
    at: float


class _Refused(Exception):
    def __init__(self, status: int, description: str, **parameters: int) -> None:
        super().__init__(description)
        self.status, self.description, self.parameters = status, description, parameters


@dataclass
class _Switches:
    error: _Refused | None = None
    throttled: int = 0  # requests left to answer 429; -1 = forever
    throttle_after: int = 0  # requests still answered before the 429s begin
    retry_after: int = 1
    down: int = 0  # requests left to answer 5xx; -1 = forever
    down_status: int = 500
    slow: float = 0.0


class HtmlEntityError(ValueError):
    """Telegram's "can't parse entities" for parse_mode=HTML."""


_TAGS = {"b", "strong", "i", "em", "u", "ins", "s", "strike", "del", "code", "pre", "a"}
_TAGS |= {"blockquote", "tg-spoiler", "span"}
_ATTR = r"""\s+[a-zA-Z-]+(?:\s*=\s*(?:"[^"]*"|'[^']*'|[^\s"'<>]+))?"""
_START = re.compile(rf"<([a-zA-Z][a-zA-Z0-9-]*)((?:{_ATTR})*)\s*>")
_END = re.compile(r"</([a-zA-Z][a-zA-Z0-9-]*)\s*>")
_ATTRS = re.compile(r"""([a-zA-Z-]+)(?:\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s"'<>]+)))?""")
_ENTITY = re.compile(r"&(?:lt|gt|amp|quot|#[0-9]{1,7}|#x[0-9a-fA-F]{1,6});")


def parse_html(text: str) -> str:
    """Return the text Telegram would show, or raise HtmlEntityError like Telegram would."""
    plain: list[str] = []
    open_tags: list[str] = []
    i = 0
    while i < len(text):
        offset = len(text[:i].encode())
        char = text[i]
        if char == "<":
            if end := _END.match(text, i):
                if not open_tags or open_tags[-1] != end[1].lower():
                    raise HtmlEntityError(f"Unexpected end tag at byte offset {offset}")
                open_tags.pop()
                i = end.end()
                continue
            if not (start := _START.match(text, i)):
                raise HtmlEntityError(f"Unclosed start tag at byte offset {offset}")
            name = start[1].lower()
            attrs = {m[1].lower(): m[2] or m[3] or m[4] or "" for m in _ATTRS.finditer(start[2])}
            if name not in _TAGS or (name == "span" and attrs.get("class") != "tg-spoiler"):
                raise HtmlEntityError(f'Unsupported start tag "{name}" at byte offset {offset}')
            open_tags.append(name)
            i = start.end()
        elif char == "&":
            if not (entity := _ENTITY.match(text, i)):
                raise HtmlEntityError(f'Character "&" at byte offset {offset} must be escaped')
            plain.append(html.unescape(entity[0]))
            i = entity.end()
        elif char == ">":
            raise HtmlEntityError(f'Character ">" at byte offset {offset} must be escaped')
        else:
            plain.append(char)
            i += 1
    if open_tags:
        raise HtmlEntityError(f'Can\'t find end tag corresponding to start tag "{open_tags[-1]}"')
    return "".join(plain)


def utf16_length(text: str) -> int:
    """Telegram counts message length in UTF-16 code units."""
    return len(text.encode("utf-16-le")) // 2


_URL = re.compile(r"https?://\S+|(?<![\w@./])(?:[A-Za-z0-9-]+\.)+[A-Za-z]{2,}(?:/\S*)?")
_FOUND = (
    ("mention", re.compile(r"(?<!\w)@[A-Za-z0-9_]{1,32}")),
    ("bot_command", re.compile(r"(?<!\w)/[A-Za-z0-9_]{1,64}(?:@[A-Za-z0-9_]{1,32})?")),
    ("hashtag", re.compile(r"(?<!\w)#\w+")),
)


def auto_entities(plain: str) -> tuple[tuple[str, str], ...]:
    """The entities Telegram's server makes of plain text by itself: links first, then
    mentions, commands and hashtags outside them. A word joiner (U+2060) after `@` or `/`
    is not a name character, so it breaks a mention or command as it does in Telegram."""
    found = [(match.start(), match.end(), "url") for match in _URL.finditer(plain)]
    links = list(found)
    for kind, pattern in _FOUND:
        for match in pattern.finditer(plain):
            if not any(start < match.end() and match.start() < end for start, end, _ in links):
                found.append((match.start(), match.end(), kind))
    return tuple((kind, plain[start:end]) for start, end, kind in sorted(found))


class FakeTelegram(FakePlatform):
    """Fake Bot API at `{url}/bot<token>/<method>`: getMe, getChat, getChatMember, sendMessage,
    createForumTopic, reopenForumTopic, editMessageText, setMessageReaction, setWebhook,
    deleteWebhook, getWebhookInfo, getUpdates. Chats exist on first use: positive ids are
    private chats, `-100…` ids forum supergroups (the bot an admin that manages topics), other
    negative ids basic groups (the bot a member).

    getUpdates long-polls as Telegram's does: it answers once an update is queued for the bot
    (`send_update`) or `timeout` seconds passed; `offset` confirms (drops) the updates before
    it; it is refused with 409 while the bot has a webhook, and a newer getUpdates for the same
    bot ends the one in flight with 409."""

    TOKEN = "123456:TEST-token"

    def __init__(self, tokens: Iterable[str] = (TOKEN,)) -> None:
        self.tokens: set[str] = set(tokens)
        self._lock = threading.Condition()
        self._closing = threading.Event()
        self._switches: dict[int | None, _Switches] = defaultdict(_Switches)
        self._gone_topics: set[tuple[int, int]] = set()
        self._closed_topics: set[tuple[int, int]] = set()
        self._method_errors: dict[tuple[str, int | None], _Refused] = {}
        self._topics_off: set[int] = set()
        self._bot_rights: dict[int, tuple[str, bool]] = {}  # chat → (status, can_manage_topics)
        self._refuse_all = False
        self._per_chat_per_second: float | None = None
        self._per_group_per_minute: float | None = None
        self._recent: dict[int, deque[float]] = defaultdict(deque)
        self._next_id: dict[int, int] = defaultdict(lambda: 1)
        self._texts: dict[tuple[int, int], str] = {}
        self.webhook: dict[str, Any] | None = None  # the last setWebhook's parameters
        self.webhooks: dict[str, dict[str, Any]] = {}  # bot token → its setWebhook's parameters
        self._update_ids: dict[str, int] = {}  # bot token → its next update_id
        self._queued: dict[str, list[dict[str, Any]]] = defaultdict(list)  # unconfirmed updates
        self._polls: dict[str, int] = {}  # bot token → the number of its latest getUpdates
        self._cut_polls = 0  # getUpdates answers still to cut mid-way
        self._messages: list[TelegramMessage] = []
        self._topics: list[TelegramTopic] = []
        self._edits: list[TelegramEdit] = []
        self._reactions: list[TelegramReaction] = []
        self._calls: list[TelegramCall] = []
        route = Route("/bot{token}/{method}", self._handle, methods=["GET", "POST"])
        self._server = FakeServer(Starlette(routes=[route]))

    # -- lifecycle -------------------------------------------------------------------------

    # -- behaviour switches ----------------------------------------------------------------

    def set_chat_not_found(self, chat_id: int) -> None:
        """400 "Bad Request: chat not found" for everything sent to the chat."""
        self._set_error(chat_id, _Refused(400, "Bad Request: chat not found"))

    def set_forbidden(
        self, chat_id: int, description: str = "Forbidden: bot was kicked from the supergroup chat"
    ) -> None:
        """403 for everything sent to the chat."""
        self._set_error(chat_id, _Refused(403, description))

    def set_migrated(self, chat_id: int, new_chat_id: int) -> None:
        """The group became a supergroup: 400 with `parameters.migrate_to_chat_id`."""
        description = "Bad Request: group chat was upgraded to a supergroup chat"
        self._set_error(chat_id, _Refused(400, description, migrate_to_chat_id=new_chat_id))

    def set_error(self, chat_id: int | None, status: int, description: str) -> None:
        """Any other refusal, e.g. ``(400, "Bad Request: not enough rights to create a topic")``."""
        self._set_error(chat_id, _Refused(status, description))

    def close_topic(self, chat_id: int, message_thread_id: int) -> None:
        """Posts to the topic now fail with 400 "Bad Request: TOPIC_CLOSED" (as for a bot
        without the Manage topics right) until reopenForumTopic."""
        with self._lock:
            self._closed_topics.add((chat_id, message_thread_id))

    def fail_method(
        self, method: str, status: int, description: str, chat_id: int | None = None
    ) -> None:
        """Refuse one Bot API method (in one chat, or all), e.g. ``("reopenForumTopic", 400,
        "Bad Request: not enough rights to manage topics")``."""
        with self._lock:
            self._method_errors[(method.lower(), chat_id)] = _Refused(status, description)

    def delete_topic(self, chat_id: int, message_thread_id: int) -> None:
        """Posts to the topic now fail with 400 "Bad Request: message thread not found"."""
        with self._lock:
            self._gone_topics.add((chat_id, message_thread_id))

    def set_topics_off(self, chat_id: int) -> None:
        """The supergroup has Topics turned off: `is_forum: false`, no createForumTopic."""
        with self._lock:
            self._topics_off.add(chat_id)

    def set_bot_status(self, chat_id: int, status: str, *, can_manage_topics: bool = False) -> None:
        """What getChatMember says of the bot: "member", "administrator", "left", "kicked".

        Without admin rights to manage topics, createForumTopic is refused as Telegram does.
        """
        with self._lock:
            self._bot_rights[chat_id] = (status, can_manage_topics)

    def set_rate_limited(
        self,
        chat_id: int | None = None,
        *,
        retry_after: int = 1,
        times: int | None = None,
        after: int = 0,
    ) -> None:
        """Answer 429 (retry_after) for the next `times` requests (None: until reset), once
        `after` more were answered as usual (the second part of a long post)."""
        with self._lock:
            switches = self._switches[chat_id]
            switches.throttled = -1 if times is None else times
            switches.retry_after = retry_after
            switches.throttle_after = after

    def set_down(
        self, chat_id: int | None = None, *, times: int | None = None, status: int = 500
    ) -> None:
        """Answer 5xx for the next `times` requests (None: until reset)."""
        with self._lock:
            switches = self._switches[chat_id]
            switches.down = -1 if times is None else times
            switches.down_status = status

    def set_slow(self, seconds: float, chat_id: int | None = None) -> None:
        """Wait `seconds` before answering (0 restores)."""
        with self._lock:
            self._switches[chat_id].slow = seconds

    def set_rate_limit(
        self, *, per_chat_per_second: float | None = None, per_group_per_minute: float | None = None
    ) -> None:
        """Enforce Telegram's flood limits on sendMessage (429 beyond them); None: off."""
        with self._lock:
            self._per_chat_per_second = per_chat_per_second
            self._per_group_per_minute = per_group_per_minute

    def refuse_all(self, refuse: bool = True) -> None:
        """Answer 500 to every request, getMe included."""
        with self._lock:
            self._refuse_all = refuse

    def post_as_member(self, chat_id: int, text: str) -> int:
        """A message a person wrote in the chat (then sent to the bot as an update); its id."""
        with self._lock:
            message_id = self._new_id(chat_id)
            self._texts[(chat_id, message_id)] = text
        return message_id

    def set_next_update_id(self, token: str, update_id: int) -> None:
        """Number the bot's next update `update_id` (Telegram numbers updates per bot)."""
        with self._lock:
            self._update_ids[token] = update_id

    def update(self, token: str, message: dict[str, Any]) -> dict[str, Any]:
        """The update the bot with `token` gets for a chat `message`, numbered as that bot's
        updates are: one after the other, whatever other bots in the chat get."""
        with self._lock:
            update_id = self._update_ids.get(token, 1)
            self._update_ids[token] = update_id + 1
        return {"update_id": update_id, "message": message}

    def send_update(self, token: str, message: dict[str, Any]) -> dict[str, Any]:
        """Queue the update for the bot's getUpdates (as `update` numbers it); returned."""
        update = self.update(token, message)
        with self._lock:
            self._queued[token].append(update)
            self._lock.notify_all()
        return update

    def queued_updates(self, token: str = TOKEN) -> list[dict[str, Any]]:
        """The bot's updates not confirmed yet by a getUpdates `offset`."""
        with self._lock:
            return list(self._queued[token])

    def cut_connection(self, times: int = 1) -> None:
        """Cut the connection of the next `times` getUpdates that carry updates, mid-answer:
        the poller gets half a body, and the updates stay unconfirmed (delivered again)."""
        with self._lock:
            self._cut_polls = times

    def reset(self) -> None:
        """Drop every switch and deleted topic (recorded data is kept; see `clear`)."""
        with self._lock:
            self._cut_polls = 0
            self._switches.clear()
            self._gone_topics.clear()
            self._closed_topics.clear()
            self._method_errors.clear()
            self._topics_off.clear()
            self._bot_rights.clear()
            self._refuse_all = False
            self._per_chat_per_second = self._per_group_per_minute = None
            self._recent.clear()

    def clear(self) -> None:
        """Forget recorded messages, topics, edits, reactions, calls, queued updates and
        webhooks."""
        with self._lock:
            self._queued.clear()
            self.webhook = None
            self.webhooks.clear()
            for records in (self._messages, self._topics, self._edits, self._reactions):
                records.clear()
            self._calls.clear()

    def _set_error(self, chat_id: int | None, error: _Refused) -> None:
        with self._lock:
            self._switches[chat_id].error = error

    # -- recorded data ---------------------------------------------------------------------

    def messages(self, chat_id: int | None = None) -> list[TelegramMessage]:
        """Accepted sendMessage calls in arrival order, optionally for one chat."""
        with self._lock:
            return self._matching(chat_id)

    def topics(self, chat_id: int | None = None) -> list[TelegramTopic]:
        """Created forum topics in order."""
        with self._lock:
            return [t for t in self._topics if chat_id is None or t.chat_id == chat_id]

    def edits(self, chat_id: int | None = None) -> list[TelegramEdit]:
        """Accepted editMessageText calls in order."""
        with self._lock:
            return [e for e in self._edits if chat_id is None or e.chat_id == chat_id]

    def reactions(self, chat_id: int | None = None) -> list[TelegramReaction]:
        """Accepted setMessageReaction calls in order."""
        with self._lock:
            return [r for r in self._reactions if chat_id is None or r.chat_id == chat_id]

    def polls(self, token: str) -> int:
        """How many getUpdates the bot has had begun (the latest one's number): a newer one
        ends the one in flight with 409."""
        with self._lock:
            return self._polls.get(token, 0)

    def calls(self, method: str | None = None) -> list[TelegramCall]:
        """Every answered request (any outcome), optionally for one method (e.g. "sendMessage")."""
        with self._lock:
            return [c for c in self._calls if method is None or c.method == method]

    def wait_for_messages(
        self, count: int, *, chat_id: int | None = None, timeout: float = 5.0
    ) -> list[TelegramMessage]:
        """Block until at least `count` messages arrived (for tests driving a subprocess)."""
        with self._lock:
            if not self._lock.wait_for(lambda: len(self._matching(chat_id)) >= count, timeout):
                have = len(self._matching(chat_id))
                raise TimeoutError(f"expected {count} telegram messages, got {have}")
            return self._matching(chat_id)

    def _matching(self, chat_id: int | None) -> list[TelegramMessage]:
        return [m for m in self._messages if chat_id is None or m.chat_id == chat_id]

    # -- the API ---------------------------------------------------------------------------

    async def _handle(self, request: Request) -> Response:
        token, method = request.path_params["token"], request.path_params["method"]
        params = await _read_params(request)
        chat_id = params.get("chat_id")
        slow = self._slowness(chat_id)
        if slow:
            await self._sleep(slow)
        try:
            if method.lower() == "getupdates":
                result = await self._get_updates(request, token, params)
            else:
                result = self._answer(token, method, params)
            if isinstance(result, _Cut):
                response: Response = _CutResponse({"ok": True, "result": result.updates})
            else:
                response = JSONResponse({"ok": True, "result": result})
            description = None
        except _Refused as refused:
            description = refused.description
            body: dict[str, Any] = {
                "ok": False,
                "error_code": refused.status,
                "description": description,
            }
            if refused.parameters:
                body["parameters"] = refused.parameters
            response = JSONResponse(body, status_code=refused.status)
        with self._lock:
            self._calls.append(
                TelegramCall(method, chat_id, response.status_code, description, _now())
            )
            self._lock.notify_all()
        return response

    def _slowness(self, chat_id: Any) -> float:
        with self._lock:
            keys = [None, chat_id] if isinstance(chat_id, int) else [None]
            return max((self._switches[k].slow for k in keys if k in self._switches), default=0)

    def _answer(self, token: str, method: str, params: dict[str, Any]) -> Any:
        """The result of a call, or raise _Refused with Telegram's error."""
        with self._lock:
            self._check_switches(token, method, params.get("chat_id"))
            match method.lower():  # Bot API method names are case-insensitive
                case "getme":
                    bot_id = int(token.split(":")[0])
                    return {"id": bot_id, "is_bot": True, "first_name": "Fake Bridge"} | {
                        "username": "fake_bridge_bot"
                    }
                case "getchat":
                    return self._chat_info(params["chat_id"])
                case "getchatmember":
                    bot_id = int(token.split(":")[0])
                    return self._chat_member(params["chat_id"], params.get("user_id"), bot_id)
                case "sendmessage":
                    return self._send_message(params)
                case "createforumtopic":
                    return self._create_topic(params)
                case "editmessagetext":
                    return self._edit(params)
                case "setmessagereaction":
                    return self._react(params)
                case "reopenforumtopic":
                    return self._reopen_topic(params)
                case "setwebhook":
                    self.webhook = self.webhooks[token] = dict(params)
                    return True
                case "deletewebhook":
                    self.webhook = None
                    self.webhooks.pop(token, None)
                    return True
                case "getwebhookinfo":
                    url = self.webhooks.get(token, {}).get("url", "")
                    return {"url": url, "has_custom_certificate": False, "pending_update_count": 0}
            raise _Refused(404, "Not Found")

    async def _get_updates(
        self, request: Request, token: str, params: dict[str, Any]
    ) -> list[dict[str, Any]] | _Cut:
        """Long polling: wait for the bot's updates from `offset` on, at most `timeout` s."""
        offset, timeout = _int(params.get("offset")), _int(params.get("timeout")) or 0
        limit = min(100, _int(params.get("limit")) or 100)
        with self._lock:
            self._check_switches(token, "getUpdates", None)
            if token in self.webhooks:
                raise _Refused(409, _WEBHOOK_ACTIVE)
            number = self._polls[token] = self._polls.get(token, 0) + 1
            if offset is not None:
                self._queued[token] = [u for u in self._queued[token] if u["update_id"] >= offset]
        deadline = _now() + timeout
        while True:
            with self._lock:
                if self._polls[token] != number:
                    raise _Refused(409, _TERMINATED)
                ready = self._queued[token][:limit]
                if ready and self._cut_polls:
                    self._cut_polls -= 1
                    return _Cut(ready)
                if ready or _now() >= deadline or self._closing.is_set():
                    return ready
            if await request.is_disconnected():  # the poller went away (killed, cancelled)
                return []
            await asyncio.sleep(0.02)

    def _check_switches(self, token: str, method: str, chat_id: Any) -> None:
        if self._refuse_all:
            raise _Refused(500, "Internal Server Error")
        if not _TOKEN_SHAPE.fullmatch(token):
            raise _Refused(404, "Not Found")  # Telegram's answer to a malformed token
        if token not in self.tokens:
            raise _Refused(401, "Unauthorized")
        keys = [None, chat_id] if isinstance(chat_id, int) else [None]
        switches = [self._switches[k] for k in keys if k in self._switches]
        for s in switches:
            if s.down:
                s.down -= 1 if s.down > 0 else 0
                raise _Refused(s.down_status, "Internal Server Error")
        for s in switches:
            if s.throttled and s.throttle_after:
                s.throttle_after -= 1
            elif s.throttled:
                s.throttled -= 1 if s.throttled > 0 else 0
                raise _too_many(s.retry_after)
        if method.lower() in (
            "getme",
            "setwebhook",
            "deletewebhook",
            "getwebhookinfo",
            "getupdates",
        ):
            return
        if not isinstance(chat_id, int):
            raise _Refused(400, "Bad Request: chat not found")
        for s in switches:
            if s.error:
                raise s.error
        for key in ((method.lower(), None), (method.lower(), chat_id)):
            if key in self._method_errors:
                raise self._method_errors[key]

    def _send_message(self, params: dict[str, Any]) -> dict[str, Any]:
        chat_id: int = params["chat_id"]
        text, parse_mode = str(params.get("text") or ""), params.get("parse_mode")
        plain = _visible_text(text, parse_mode)
        thread_id = params.get("message_thread_id")
        if thread_id is not None and not self._topic_exists(chat_id, thread_id):
            raise _Refused(400, "Bad Request: message thread not found")
        if (chat_id, thread_id) in self._closed_topics:
            raise _Refused(400, "Bad Request: TOPIC_CLOSED")
        reply = params.get("reply_parameters") or {}
        reply_to = reply.get("message_id") if isinstance(reply, dict) else None
        if reply_to is not None and (chat_id, reply_to) not in self._texts:
            if not reply.get("allow_sending_without_reply"):
                raise _Refused(400, "Bad Request: message to be replied not found")
            reply_to = None
        self._check_flood(chat_id)
        message_id = self._new_id(chat_id)
        self._texts[(chat_id, message_id)] = plain
        preview = params.get("link_preview_options") or {}
        self._messages.append(
            TelegramMessage(
                chat_id=chat_id,
                message_id=message_id,
                message_thread_id=thread_id,
                reply_to_message_id=reply_to,
                text=text,
                plain_text=plain,
                parse_mode=parse_mode,
                link_preview_disabled=bool(
                    (isinstance(preview, dict) and preview.get("is_disabled"))
                    or str(params.get("disable_web_page_preview")).lower() == "true"
                ),
                at=_now(),
                params=dict(params),
                entities=auto_entities(plain),
            )
        )
        message = _message(chat_id, message_id, plain)
        if thread_id is not None:
            message |= {"message_thread_id": thread_id, "is_topic_message": True}
        if reply_to is not None:
            original = self._texts[(chat_id, reply_to)]
            message["reply_to_message"] = _message(chat_id, reply_to, original)
        return message

    def _create_topic(self, params: dict[str, Any]) -> dict[str, Any]:
        chat_id: int = params["chat_id"]
        name = str(params.get("name") or "")
        if not str(chat_id).startswith("-100") or chat_id in self._topics_off:
            raise _Refused(400, "Bad Request: the chat is not a forum")
        status, can_manage_topics = self._rights(chat_id)
        if status != "administrator" or not can_manage_topics:
            raise _Refused(400, "Bad Request: not enough rights to create a topic")
        if not 1 <= len(name) <= 128:
            raise _Refused(400, "Bad Request: TOPIC_NAME_INVALID")
        # As in Telegram, a topic's id is the id of the service message that opened it.
        thread_id = self._new_id(chat_id)
        self._texts[(chat_id, thread_id)] = name
        self._topics.append(TelegramTopic(chat_id, thread_id, name, _now()))
        return {"message_thread_id": thread_id, "name": name, "icon_color": 7322096}

    def _edit(self, params: dict[str, Any]) -> dict[str, Any]:
        chat_id: int = params["chat_id"]
        message_id, parse_mode = params.get("message_id"), params.get("parse_mode")
        text = str(params.get("text") or "")
        plain = _visible_text(text, parse_mode)
        if not isinstance(message_id, int) or (chat_id, message_id) not in self._texts:
            raise _Refused(400, "Bad Request: message to edit not found")
        if self._texts[(chat_id, message_id)] == plain:
            raise _Refused(400, _NOT_MODIFIED)
        self._texts[(chat_id, message_id)] = plain
        self._edits.append(TelegramEdit(chat_id, message_id, text, plain, parse_mode, _now()))
        return _message(chat_id, message_id, plain) | {"edit_date": int(time.time())}

    def _react(self, params: dict[str, Any]) -> bool:
        chat_id: int = params["chat_id"]
        message_id = params.get("message_id")
        if not isinstance(message_id, int) or (chat_id, message_id) not in self._texts:
            raise _Refused(400, "Bad Request: message to react not found")
        reactions = params.get("reaction") or []
        emoji = tuple(str(r.get("emoji")) for r in reactions if isinstance(r, dict))
        if any(e not in set(ReactionEmoji) for e in emoji):
            raise _Refused(400, "Bad Request: REACTION_INVALID")
        self._reactions.append(TelegramReaction(chat_id, message_id, emoji, _now()))
        return True

    def _reopen_topic(self, params: dict[str, Any]) -> bool:
        chat_id: int = params["chat_id"]
        thread_id = params.get("message_thread_id")
        if not self._topic_exists(chat_id, thread_id):
            raise _Refused(400, "Bad Request: TOPIC_ID_INVALID")
        if (chat_id, thread_id) not in self._closed_topics:
            raise _Refused(400, "Bad Request: TOPIC_NOT_MODIFIED")
        self._closed_topics.discard((chat_id, thread_id))
        return True

    def _chat_info(self, chat_id: int) -> dict[str, Any]:
        """getChat's ChatFullInfo, with the fields PTB requires."""
        chat = _chat(chat_id)
        if "is_forum" in chat:
            chat["is_forum"] = chat_id not in self._topics_off
        gifts = dict.fromkeys(
            ("unlimited_gifts", "limited_gifts", "unique_gifts", "premium_subscription"), False
        )
        return chat | {
            "accent_color_id": 0,
            "max_reaction_count": 11,
            "accepted_gift_types": gifts | {"gifts_from_channels": False},
        }

    def _rights(self, chat_id: int) -> tuple[str, bool]:
        if chat_id in self._bot_rights:
            return self._bot_rights[chat_id]
        if str(chat_id).startswith("-100"):
            return "administrator", True
        return "member", False

    def _chat_member(self, chat_id: int, user_id: Any, bot_id: int) -> dict[str, Any]:
        if str(user_id) != str(bot_id):  # only the bot itself is modelled
            raise _Refused(400, "Bad Request: PARTICIPANT_ID_INVALID")
        status, can_manage_topics = self._rights(chat_id)
        user = {"id": bot_id, "is_bot": True, "first_name": "Fake Bridge"}
        member: dict[str, Any] = {"status": status, "user": user}
        if status == "administrator":
            rights = (
                "can_manage_chat",
                "can_delete_messages",
                "can_manage_video_chats",
                "can_restrict_members",
                "can_promote_members",
                "can_change_info",
                "can_invite_users",
                "can_post_stories",
                "can_edit_stories",
                "can_delete_stories",
                "can_pin_messages",
            )
            member |= dict.fromkeys(rights, False) | {
                "can_be_edited": False,
                "is_anonymous": False,
                "can_manage_chat": True,
                "can_manage_topics": can_manage_topics,
            }
        elif status == "kicked":
            member["until_date"] = 0
        return member

    def _topic_exists(self, chat_id: int, thread_id: Any) -> bool:
        if (chat_id, thread_id) in self._gone_topics:
            return False
        return any(t.chat_id == chat_id and t.message_thread_id == thread_id for t in self._topics)

    def _check_flood(self, chat_id: int) -> None:
        now = _now()
        recent = self._recent[chat_id]
        while recent and now - recent[0] >= 60.0:
            recent.popleft()
        last_second = sum(1 for t in recent if now - t < 1.0)
        if self._per_chat_per_second is not None and last_second >= self._per_chat_per_second:
            raise _too_many(1)
        limit = self._per_group_per_minute
        if chat_id < 0 and limit is not None and len(recent) >= limit:
            raise _too_many(max(1, int(60.0 - (now - recent[0])) + 1))
        recent.append(now)

    def _new_id(self, chat_id: int) -> int:
        message_id = self._next_id[chat_id]
        self._next_id[chat_id] = message_id + 1
        return message_id

    async def _sleep(self, seconds: float) -> None:
        deadline = _now() + seconds
        while not self._closing.is_set() and _now() < deadline:
            await asyncio.sleep(min(0.05, max(0.0, deadline - _now())))


def _now() -> float:
    return time.monotonic()


_WEBHOOK_ACTIVE = (
    "Conflict: can't use getUpdates method while webhook is active; use deleteWebhook to "
    "delete the webhook first"
)
_TERMINATED = (
    "Conflict: terminated by other getUpdates request; make sure that only one bot instance "
    "is running"
)


@dataclass(frozen=True)
class _Cut:
    """A getUpdates answer whose connection is to be cut half-way through."""

    updates: list[dict[str, Any]]


class _CutResponse(JSONResponse):
    """Announces the whole body, sends half of it and ends: uvicorn closes the connection,
    and the client sees a connection dropped mid-answer."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send(
            {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
        )
        half = self.body[: len(self.body) // 2]
        await send({"type": "http.response.body", "body": half, "more_body": True})


def _int(value: Any) -> int | None:
    """A numeric parameter as Telegram reads it (form values arrive as strings)."""
    if isinstance(value, int):
        return value
    if isinstance(value, str) and re.fullmatch(r"-?\d+", value):
        return int(value)
    return None


def _too_many(retry_after: int) -> _Refused:
    return _Refused(429, f"Too Many Requests: retry after {retry_after}", retry_after=retry_after)


def _visible_text(text: str, parse_mode: Any) -> str:
    if parse_mode is None or parse_mode == "":
        plain = text
    elif str(parse_mode).lower() == "html":
        try:
            plain = parse_html(text)
        except HtmlEntityError as error:
            raise _Refused(400, f"Bad Request: can't parse entities: {error}") from None
    elif str(parse_mode).lower() in ("markdown", "markdownv2"):
        plain = text  # not modelled: the bridge only sends HTML
    else:
        raise _Refused(400, "Bad Request: unsupported parse_mode")
    if not plain.strip():
        raise _Refused(400, "Bad Request: message text is empty")
    if utf16_length(plain) > MAX_TEXT:
        raise _Refused(400, "Bad Request: message is too long")
    return plain


def _chat(chat_id: int) -> dict[str, Any]:
    if chat_id > 0:
        return {"id": chat_id, "type": "private", "first_name": "Operator"}
    if str(chat_id).startswith("-100"):
        return {"id": chat_id, "type": "supergroup", "title": "Support", "is_forum": True}
    return {"id": chat_id, "type": "group", "title": "Support"}


def _message(chat_id: int, message_id: int, text: str) -> dict[str, Any]:
    bot = {"id": 123456, "is_bot": True, "first_name": "Fake Bridge"}
    return {
        "message_id": message_id,
        "date": int(time.time()),
        "chat": _chat(chat_id),
        "from": bot,
        "text": text,
    }


async def _read_params(request: Request) -> dict[str, Any]:
    """Query, form or JSON parameters, typed as Telegram reads them.

    PTB's HTTPXRequest posts application/x-www-form-urlencoded, each non-string value JSON-encoded
    (so chat_id "-100123", reply_parameters '{"message_id": 5, ...}').
    """
    params: dict[str, Any] = dict(request.query_params)
    body = await request.body()
    if body and request.headers.get("content-type", "").startswith("application/json"):
        decoded = json.loads(body)
        params.update(decoded if isinstance(decoded, dict) else {})
    elif body:
        params.update(parse_qsl(body.decode(), keep_blank_values=True))
    if isinstance(params.get("chat_id"), str) and re.fullmatch(r"-?\d+", params["chat_id"]):
        params["chat_id"] = int(params["chat_id"])
    for name in _INT_FIELDS:
        if isinstance(params.get(name), str) and re.fullmatch(r"-?\d+", params[name]):
            params[name] = int(params[name])
    for name in _JSON_FIELDS:
        if isinstance(params.get(name), str):
            with contextlib.suppress(ValueError):  # left a string: treated as absent
                params[name] = json.loads(params[name])
    return params
