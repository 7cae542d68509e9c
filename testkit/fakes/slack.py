"""A fake Slack Web API speaking the real wire format, for driving slack-sdk in tests.

    with FakeSlack() as slack:
        client = AsyncWebClient(token="xoxb-test", base_url=slack.url + "/api/")
        slack.set_error("C0GONE", "channel_not_found")
        ...
        assert slack.posts("C0SUPPORT")[0].thread_ts is None

Behaviour switches apply per channel, or to every channel when `channel` is None. They are
plain attributes behind a lock, so tests flip them from their own thread while the server runs.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .server import FakePlatform, FakeServer
from .slack_socket import FakeSocketMode

_BOT_USER = "U0BRIDGE"
_MAX_BLOCKS = 50
_MAX_SECTION_TEXT = 3000
_MAX_HEADER_TEXT = 150
_MAX_CONTEXT_ELEMENTS = 10
_RICH_TEXT_ELEMENTS = ("rich_text_section", "rich_text_quote", "rich_text_preformatted")
# Slack does not publish one; the bridge keeps its rich_text blocks within a section's 3000.
_MAX_RICH_TEXT = 4000
# What a freshly installed bridge app holds (README, Slack set-up), `channels:read` and
# `groups:read` included so `smsbridge doctor` can look at the channels.
DEFAULT_SCOPES = (
    "chat:write",
    "chat:write.customize",
    "reactions:write",
    "channels:read",
    "groups:read",
    "channels:history",
    "groups:history",
    "users:read",
)
# The scope each method needs; a token without it gets `missing_scope`.
_NEEDED_SCOPE = {
    "chat.postMessage": "chat:write",
    "chat.update": "chat:write",
    "reactions.add": "reactions:write",
    "reactions.remove": "reactions:write",
    "conversations.info": "channels:read",
    "conversations.history": "channels:history",
    "conversations.replies": "channels:history",
    "users.info": "users:read",
}
_PAGE = 200  # at most this many messages a history/replies page (Slack: up to 999)


@dataclass(frozen=True)
class SlackMessage:
    """An accepted chat.postMessage. `at` is the arrival time (time.monotonic())."""

    channel: str
    ts: str
    thread_ts: str | None
    text: str | None
    blocks: list[dict[str, Any]] | None
    unfurl_links: bool | None
    unfurl_media: bool | None
    at: float
    params: dict[str, Any] = field(repr=False, default_factory=dict)
    metadata: dict[str, Any] | None = None  # event_type + event_payload, as posted


@dataclass(frozen=True)
class SlackEdit:
    """An accepted chat.update."""

    channel: str
    ts: str
    text: str | None
    blocks: list[dict[str, Any]] | None
    at: float


@dataclass(frozen=True)
class SlackReaction:
    """An accepted reactions.add (`ts` is the reacted-to message's `timestamp`)."""

    channel: str
    ts: str
    name: str
    at: float


@dataclass(frozen=True)
class SlackCall:
    """Every request the fake answered, accepted or not."""

    method: str
    channel: str | None
    status: int
    error: str | None
    at: float


@dataclass
class _Switches:
    error: str | None = None
    throttled: int = 0  # requests left to answer 429; -1 = forever
    retry_after: int = 1
    down: int = 0  # requests left to answer 5xx; -1 = forever
    down_status: int = 503
    slow: float = 0.0
    not_member: bool = False


def _flag(value: Any) -> bool | None:
    """slack-sdk sends booleans as JSON true/false, or as "1"/"0" in form/query params."""
    if value is None or isinstance(value, bool):
        return value
    return str(value).lower() in ("1", "true")


def _blocks_problem(blocks: Any) -> str | None:
    """Slack's own block limits: a message breaking them is refused with `invalid_blocks`."""
    if not isinstance(blocks, list) or len(blocks) > _MAX_BLOCKS:
        return "invalid_blocks"
    for block in blocks:
        if not isinstance(block, dict) or "type" not in block:
            return "invalid_blocks"
        text = block.get("text", {}).get("text", "") if block["type"] != "context" else ""
        if block["type"] == "section" and not 1 <= len(text) <= _MAX_SECTION_TEXT:
            return "invalid_blocks"
        if block["type"] == "header" and not 1 <= len(text) <= _MAX_HEADER_TEXT:
            return "invalid_blocks"
        if block["type"] == "context":
            elements = block.get("elements", [])
            if not 1 <= len(elements) <= _MAX_CONTEXT_ELEMENTS:
                return "invalid_blocks"
        if block["type"] == "rich_text" and _rich_text_problem(block):
            return "invalid_blocks"
    return None


def _rich_text_problem(block: dict[str, Any]) -> bool:
    """A rich_text block needs typed elements holding typed, non-empty children."""
    elements = block.get("elements")
    if not isinstance(elements, list) or not elements:
        return True
    size = 0
    for element in elements:
        if element.get("type") not in _RICH_TEXT_ELEMENTS:
            return True
        children = element.get("elements")
        if not isinstance(children, list) or not children:
            return True
        for child in children:
            if child.get("type") == "text" and isinstance(child.get("text"), str):
                size += len(child["text"])
                if not child["text"]:
                    return True
            elif child.get("type") == "link" and str(child.get("url", "")).startswith("http"):
                size += len(child["url"]) + len(child.get("text", ""))
            else:
                return True
    return size > _MAX_RICH_TEXT


def rich_text(blocks: list[dict[str, Any]] | None, kind: str = "rich_text_section") -> str:
    """The characters shown by the `kind` elements of a message's rich_text blocks."""
    return "".join(
        child.get("text") or child.get("url", "")
        for block in blocks or []
        if block["type"] == "rich_text"
        for element in block["elements"]
        if element["type"] == kind
        for child in element["elements"]
    )


class FakeSlack(FakePlatform):
    """Fake Slack Web API at `{url}/api/<method>`: auth.test (with the `x-oauth-scopes`
    header), conversations.info, chat.postMessage, chat.update, reactions.add. Start with
    `start()` or `with FakeSlack() as slack:`."""

    TEAM_ID = "T0FAKE"  # the workspace the token belongs to, as auth.test tells
    APP_TOKEN = "xapp-test"  # the app-level token apps.connections.open accepts

    def __init__(self, tokens: Iterable[str] = ("xoxb-test",)) -> None:
        self.tokens: set[str] = set(tokens)
        # Where apps.connections.open sends clients; None: Socket Mode is off for the app.
        self.socket_mode: FakeSocketMode | None = None
        self._lock = threading.Condition()
        self._closing = threading.Event()
        self._switches: dict[str | None, _Switches] = defaultdict(_Switches)
        self._refuse_all = False
        self._rate_per_second: float | None = None
        self._recent: dict[str, deque[float]] = defaultdict(deque)
        self._scopes: tuple[str, ...] = DEFAULT_SCOPES
        self._last_ts = 0  # microseconds: ts are the time of posting, each one distinct
        self._posts: list[SlackMessage] = []
        self._edits: list[SlackEdit] = []
        self._reactions: list[SlackReaction] = []
        self._calls: list[SlackCall] = []
        self._members: dict[str, str] = {}
        self._member_messages: set[tuple[str, str]] = set()  # (channel, ts) people wrote
        app = Starlette(routes=[Route("/api/{method}", self._handle, methods=["GET", "POST"])])
        self._server = FakeServer(app)

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def api_url(self) -> str:
        """``url + "/api/"``: what to give AsyncWebClient(base_url=...)."""
        return self.url + "/api/"

    # -- behaviour switches ----------------------------------------------------------------

    def set_error(self, channel: str | None, error: str | None) -> None:
        """Answer `{"ok": false, "error": error}` (HTTP 200) for the channel; None restores ok.

        E.g. "channel_not_found", "not_in_channel", "is_archived", "msg_too_long".
        """
        _check_channel(channel)
        with self._lock:
            self._switches[channel].error = error

    def set_rate_limited(
        self, channel: str | None = None, *, retry_after: int = 1, times: int | None = None
    ) -> None:
        """Answer 429 + `Retry-After` for the next `times` requests (None: until reset)."""
        _check_channel(channel)
        with self._lock:
            switches = self._switches[channel]
            switches.throttled = -1 if times is None else times
            switches.retry_after = retry_after

    def set_down(
        self, channel: str | None = None, *, times: int | None = None, status: int = 503
    ) -> None:
        """Answer 5xx (an HTML error page) for the next `times` requests (None: until reset)."""
        _check_channel(channel)
        with self._lock:
            switches = self._switches[channel]
            switches.down = -1 if times is None else times
            switches.down_status = status

    def set_slow(self, seconds: float, channel: str | None = None) -> None:
        """Wait `seconds` before answering (0 restores)."""
        _check_channel(channel)
        with self._lock:
            self._switches[channel].slow = seconds

    def set_rate_limit(self, per_second: float | None) -> None:
        """Enforce at most `per_second` chat.postMessage per channel (429 beyond); None: off."""
        with self._lock:
            self._rate_per_second = per_second

    def refuse_all(self, refuse: bool = True) -> None:
        """Answer 503 to every request, auth.test included."""
        with self._lock:
            self._refuse_all = refuse

    def set_scopes(self, scopes: Iterable[str]) -> None:
        """The token's scopes (auth.test's `x-oauth-scopes`); methods needing others fail."""
        with self._lock:
            self._scopes = tuple(scopes)

    def set_not_member(self, channel: str) -> None:
        """The bot is not in the channel: `is_member: false`, and posts get `not_in_channel`."""
        _check_channel(channel)
        with self._lock:
            self._switches[channel].not_member = True

    def add_member(self, user: str, display_name: str) -> None:
        """A workspace member `users.info` knows."""
        with self._lock:
            self._members[user] = display_name

    def post_as_member(self, channel: str) -> str:
        """A message a human wrote (as Slack would then send it in an event); its `ts`."""
        with self._lock:
            ts = self._next_ts()
            self._member_messages.add((channel, ts))
        return ts

    def reset(self) -> None:
        """Drop every switch (recorded data is kept; see `clear`)."""
        with self._lock:
            self._switches.clear()
            self._refuse_all = False
            self._rate_per_second = None
            self._recent.clear()
            self._scopes = DEFAULT_SCOPES
            self.socket_mode = None

    def clear(self) -> None:
        """Forget recorded posts, edits, reactions and calls."""
        with self._lock:
            self._posts.clear()
            self._edits.clear()
            self._reactions.clear()
            self._calls.clear()

    # -- recorded data ---------------------------------------------------------------------

    def posts(self, channel: str | None = None) -> list[SlackMessage]:
        """Accepted chat.postMessage calls in arrival order, optionally for one channel."""
        with self._lock:
            return [p for p in self._posts if channel is None or p.channel == channel]

    def edits(self, channel: str | None = None) -> list[SlackEdit]:
        """Accepted chat.update calls in arrival order."""
        with self._lock:
            return [e for e in self._edits if channel is None or e.channel == channel]

    def reactions(self, channel: str | None = None) -> list[SlackReaction]:
        """Accepted reactions.add calls in arrival order."""
        with self._lock:
            return [r for r in self._reactions if channel is None or r.channel == channel]

    def calls(self, method: str | None = None) -> list[SlackCall]:
        """Every answered request (any outcome), optionally for one API method."""
        with self._lock:
            return [c for c in self._calls if method is None or c.method == method]

    def wait_for_posts(
        self, count: int, *, channel: str | None = None, timeout: float = 5.0
    ) -> list[SlackMessage]:
        """Block until at least `count` posts arrived (for tests driving a subprocess)."""
        with self._lock:
            if not self._lock.wait_for(lambda: len(self._matching(channel)) >= count, timeout):
                have = len(self._matching(channel))
                raise TimeoutError(f"expected {count} slack posts, got {have}")
            return self._matching(channel)

    def _matching(self, channel: str | None) -> list[SlackMessage]:
        return [p for p in self._posts if channel is None or p.channel == channel]

    # -- the API ---------------------------------------------------------------------------

    async def _handle(self, request: Request) -> Response:
        method = request.path_params["method"]
        params = await _read_params(request)
        token = _bearer(request) or params.pop("token", None)
        channel = params.get("channel") or None
        channel = str(channel) if channel is not None else None
        response, slow = self._decide(method, token, channel)
        if slow:
            await self._sleep(slow)
        if response is None:
            response = self._apply(method, channel, params)
        with self._lock:
            error = None
            if isinstance(response, JSONResponse):
                error = json.loads(bytes(response.body)).get("error")
            self._calls.append(SlackCall(method, channel, response.status_code, error, _now()))
            self._lock.notify_all()
        return response

    def _decide(
        self, method: str, token: str | None, channel: str | None
    ) -> tuple[Response | None, float]:
        """Apply the switches: an error response to give, or None, and how long to stall."""
        with self._lock:
            keys: list[str | None] = [None] if channel is None else [None, channel]
            switches = [self._switches[k] for k in keys if k in self._switches]
            slow = max((s.slow for s in switches), default=0.0)
            if self._refuse_all:
                return _outage(503), slow
            for s in switches:
                if s.down:
                    s.down -= 1 if s.down > 0 else 0
                    return _outage(s.down_status), slow
            for s in switches:
                if s.throttled:
                    s.throttled -= 1 if s.throttled > 0 else 0
                    return _rate_limited(s.retry_after), slow
            if not token:
                return _error("not_authed"), slow
            if method == "apps.connections.open":
                return _app_token_refusal(token, self.tokens), slow
            if token not in self.tokens:
                return _error("invalid_auth"), slow
            if method == "auth.test":
                return None, slow
            needed = _NEEDED_SCOPE.get(method)
            if needed is not None and needed not in self._scopes:
                return _missing_scope(needed, self._scopes), slow
            if method == "users.info":
                return None, slow
            if channel is None:
                return _error("channel_not_found"), slow
            for s in switches:
                if s.error:
                    return _error(s.error), slow
            if method != "conversations.info" and any(s.not_member for s in switches):
                return _error("not_in_channel"), slow
            if method == "chat.postMessage" and self._over_rate(channel):
                return _rate_limited(1), slow
            return None, slow

    def _over_rate(self, channel: str) -> bool:
        if self._rate_per_second is None:
            return False
        now = _now()
        recent = self._recent[channel]
        while recent and now - recent[0] >= 1.0:
            recent.popleft()
        if len(recent) >= self._rate_per_second:
            return True
        recent.append(now)
        return False

    def _apply(self, method: str, channel: str | None, params: dict[str, Any]) -> Response:
        handler: Callable[[str, dict[str, Any]], Response] | None = {
            "chat.postMessage": self._post_message,
            "chat.update": self._update,
            "reactions.add": self._react,
            "reactions.remove": self._unreact,
            "conversations.history": self._history,
            "conversations.replies": self._history,
        }.get(method)
        if method == "apps.connections.open":
            with self._lock:
                socket_mode = self.socket_mode
            if socket_mode is None:
                return _error("invalid_request")  # the app has Socket Mode turned off
            return _ok(url=socket_mode.new_url())
        if method == "users.info":
            user = str(params.get("user") or "")
            name = self._members.get(user)
            if name is None:
                return _error("user_not_found")
            return _ok(user={"id": user, "name": name.lower(), "profile": {"display_name": name}})
        if method == "auth.test":
            answer = _ok(
                url="https://fake.slack.com/",
                team="Fake Workspace",
                user="bridge",
                team_id=self.TEAM_ID,
                user_id=_BOT_USER,
                bot_id="B0BRIDGE",
                is_enterprise_install=False,
            )
            with self._lock:
                answer.headers["x-oauth-scopes"] = ",".join(self._scopes)
            return answer
        if method == "conversations.info":
            assert channel is not None
            return self._channel_info(channel)
        if handler is None:
            return _error("unknown_method")
        assert channel is not None
        return handler(channel, params)

    def _channel_info(self, channel: str) -> Response:
        with self._lock:
            switches = self._switches.get(channel)
            member = not (switches is not None and switches.not_member)
        return _ok(
            channel={
                "id": channel,
                "name": channel.lower().removeprefix("c0"),  # C0SUPPORT is #support
                "is_channel": True,
                "is_private": False,
                "is_archived": False,
                "is_member": member,
            }
        )

    def _post_message(self, channel: str, params: dict[str, Any]) -> Response:
        text, blocks = params.get("text"), _json_field(params.get("blocks"))
        if not text and not blocks:
            return _error("no_text")
        if blocks is not None and (problem := _blocks_problem(blocks)):
            return _error(problem)
        thread_ts = params.get("thread_ts") or None
        metadata = _json_field(params.get("metadata"))
        with self._lock:
            ts = self._next_ts()
            self._posts.append(
                SlackMessage(
                    channel=channel,
                    ts=ts,
                    thread_ts=thread_ts,
                    text=text,
                    blocks=blocks,
                    unfurl_links=_flag(params.get("unfurl_links")),
                    unfurl_media=_flag(params.get("unfurl_media")),
                    at=_now(),
                    params=dict(params),
                    metadata=metadata if isinstance(metadata, dict) else None,
                )
            )
        message: dict[str, Any] = {"type": "message", "user": _BOT_USER, "text": text, "ts": ts}
        if blocks is not None:
            message["blocks"] = blocks
        if thread_ts:
            message["thread_ts"] = thread_ts
        return _ok(channel=channel, ts=ts, message=message)

    def _next_ts(self) -> str:
        """A message ts as Slack makes them: the posting time, unique in the channel."""
        self._last_ts = max(int(time.time() * 1_000_000), self._last_ts + 1)
        return f"{self._last_ts // 1_000_000}.{self._last_ts % 1_000_000:06d}"

    def _history(self, channel: str, params: dict[str, Any]) -> Response:
        """conversations.history (top-level messages, newest first) or, with `ts`,
        conversations.replies (the parent then its replies, oldest first); `oldest`, `limit`
        and a `cursor` (an offset here) as Slack takes them; metadata only when asked."""
        parent = params.get("ts")
        oldest = float(params.get("oldest") or 0)
        limit = min(int(params.get("limit") or 100), _PAGE)
        offset = int(params.get("cursor") or 0)
        with self._lock:
            if parent is None:
                found = [p for p in reversed(self._posts) if p.thread_ts is None]
            else:
                found = [p for p in self._posts if p.ts == parent or p.thread_ts == parent]
                if not any(p.ts == parent for p in found):
                    return _error("thread_not_found")
        found = [p for p in found if p.channel == channel and float(p.ts) >= oldest]
        page = found[offset : offset + limit]
        metadata = _flag(params.get("include_all_metadata"))
        messages = []
        for post in page:
            message: dict[str, Any] = {"type": "message", "user": _BOT_USER, "ts": post.ts}
            message["text"] = post.text or ""
            if post.thread_ts:
                message["thread_ts"] = post.thread_ts
            if metadata and post.metadata is not None:
                message["metadata"] = post.metadata
            messages.append(message)
        more = offset + limit < len(found)
        cursor = str(offset + limit) if more else ""
        return _ok(messages=messages, has_more=more, response_metadata={"next_cursor": cursor})

    def _update(self, channel: str, params: dict[str, Any]) -> Response:
        ts, text, blocks = params.get("ts"), params.get("text"), _json_field(params.get("blocks"))
        if blocks is not None and (problem := _blocks_problem(blocks)):
            return _error(problem)
        with self._lock:
            if not any(p.channel == channel and p.ts == ts for p in self._posts):
                return _error("message_not_found")
            assert isinstance(ts, str)
            self._edits.append(SlackEdit(channel, ts, text, blocks, _now()))
        return _ok(channel=channel, ts=ts, text=text or "")

    def _react(self, channel: str, params: dict[str, Any]) -> Response:
        ts, name = params.get("timestamp"), str(params.get("name") or "").strip(":")
        if not name:
            return _error("invalid_name")
        with self._lock:
            known = (channel, ts) in self._member_messages
            if not known and not any(p.channel == channel and p.ts == ts for p in self._posts):
                return _error("message_not_found")
            if any(r.channel == channel and r.ts == ts and r.name == name for r in self._reactions):
                return _error("already_reacted")
            assert isinstance(ts, str)
            self._reactions.append(SlackReaction(channel, ts, name, _now()))
        return _ok()

    def _unreact(self, channel: str, params: dict[str, Any]) -> Response:
        ts, name = params.get("timestamp"), str(params.get("name") or "").strip(":")
        with self._lock:
            kept = [
                r
                for r in self._reactions
                if not (r.channel == channel and r.ts == ts and r.name == name)
            ]
            if len(kept) == len(self._reactions):
                return _error("no_reaction")
            self._reactions[:] = kept
        return _ok()

    async def _sleep(self, seconds: float) -> None:
        deadline = _now() + seconds
        while not self._closing.is_set() and _now() < deadline:
            await asyncio.sleep(min(0.05, max(0.0, deadline - _now())))


def _check_channel(channel: object) -> None:
    # Catches `set_down(3)` meaning `set_down(times=3)`: channels are ids like "C0SUPPORT".
    if channel is not None and not isinstance(channel, str):
        raise TypeError(f"channel must be a Slack channel id (str) or None, not {channel!r}")


def _app_token_refusal(token: str, bot_tokens: set[str]) -> JSONResponse | None:
    """apps.connections.open takes only the app-level token: a bot token is the wrong type."""
    if token == FakeSlack.APP_TOKEN:
        return None
    return _error("not_allowed_token_type" if token in bot_tokens else "invalid_auth")


def _now() -> float:
    return time.monotonic()


async def _read_params(request: Request) -> dict[str, Any]:
    """Query string plus body: slack-sdk sends JSON (chat.*) or query/form params (others)."""
    params: dict[str, Any] = dict(request.query_params)
    body = await request.body()
    if not body:
        return params
    if request.headers.get("content-type", "").startswith("application/json"):
        decoded = json.loads(body)
        if isinstance(decoded, dict):
            params.update(decoded)
    else:
        params.update(parse_qsl(body.decode(), keep_blank_values=True))
    return params


def _json_field(value: Any) -> Any:
    """Form-encoded callers send `blocks` as a JSON string."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _bearer(request: Request) -> str | None:
    scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
    return credentials.strip() or None if scheme.lower() == "bearer" else None


def _ok(**fields: Any) -> JSONResponse:
    return JSONResponse({"ok": True, **fields})


def _error(error: str) -> JSONResponse:
    # Slack answers API errors with HTTP 200; only the body says ok: false.
    return JSONResponse({"ok": False, "error": error})


def _missing_scope(needed: str, provided: Iterable[str]) -> JSONResponse:
    body = {"ok": False, "error": "missing_scope", "needed": needed, "provided": ",".join(provided)}
    return JSONResponse(body)


def _rate_limited(retry_after: int) -> JSONResponse:
    return JSONResponse(
        {"ok": False, "error": "ratelimited"},
        status_code=429,
        headers={"Retry-After": str(retry_after)},
    )


def _outage(status: int) -> Response:
    # Outages come from the load balancer as HTML, not as Slack JSON.
    page = f"<html><body><h1>{status} Service Unavailable</h1></body></html>"
    return Response(page, status_code=status, media_type="text/html")
