"""Slack destination: posts as Block Kit messages with slack-sdk's AsyncWebClient.

Threads are Slack's own: the first message of a conversation is the parent and its `ts` is the
thread reference. Customer text is untrusted: only `&`, `<`, `>` are escaped (Slack's rule), which
is enough to show `<!channel>` or `<https://evil|bank.com>` literally instead of acting on them,
and direction overrides and invisible characters are removed (`text.neutralise`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Sequence
from typing import Any, cast

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.web.async_slack_response import AsyncSlackResponse

from .base import Part, Permanent, Post, Reason, Retryable, Sent
from .split import split
from .text import neutralise

SECTION_LIMIT = 3000  # characters of a section block's text
BLOCKS_PER_MESSAGE = 45  # Slack allows 50; leave room for the heading and the part marker
CHARS_PER_MESSAGE = 36_000  # Slack truncates text at 40,000; leave room for the heading
HEADING_LIMIT = 2000

_RETRYABLE_ERRORS = {
    "internal_error",
    "fatal_error",
    "service_unavailable",
    "request_timeout",
    "ratelimited",
    "rate_limited",
}
_AUTH_ERRORS = {
    "invalid_auth",
    "not_authed",
    "account_inactive",
    "token_revoked",
    "token_expired",
    "missing_scope",
}
_HINTS = {
    "channel_not_found": " — check the channel id and invite the bot to the channel",
    "not_in_channel": " — invite the bot to the channel",
    "is_archived": " — the channel is archived; unarchive it or configure another",
    "invalid_auth": " — check the bot token",
    "missing_scope": " — the Slack app needs the chat:write and reactions:write scopes",
}
# The worker names reactions with Unicode emoji (Telegram's form); Slack wants names.
_EMOJI_NAMES = {"👍": "+1", "👀": "eyes", "✅": "white_check_mark", "❌": "x", "🔥": "fire"}


def escape(text: str) -> str:
    """Slack's escaping for untrusted text: exactly `&`, `<` and `>`; direction overrides and
    invisible characters removed first (`neutralise`)."""
    text = neutralise(text)
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _mrkdwn(text: str) -> dict[str, Any]:
    # verbatim: Slack would otherwise link-ify channel names and parse some mentions in
    # customer text on its own, escaping or not.
    return {"type": "mrkdwn", "text": text, "verbatim": True}


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": _mrkdwn(text)}


def _context(items: Sequence[str]) -> dict[str, Any]:
    # A context block holds at most 10 elements: extra items share the last one.
    if len(items) > 10:
        items = [*items[:9], " · ".join(items[9:])]
    return {"type": "context", "elements": [_mrkdwn(t) for t in items]}


def _quote_lines(text: str) -> str:
    return "\n".join("> " + line for line in text.split("\n"))


class SlackAdapter:
    """Posts to one Slack channel. `render` → blocks; `send`/`edit`/`react` map errors."""

    def __init__(
        self,
        name: str,
        token: str,
        channel: str,
        base_url: str = "https://slack.com/api/",
        timeout: float = 10.0,
    ) -> None:
        self.name = name
        self.channel = channel
        self._timeout = timeout
        # No SDK retry handlers: a retry belongs to the durable outbox, which survives restarts.
        self._client = AsyncWebClient(
            token=token,
            base_url=base_url,
            # Typed int, but only ever handed to aiohttp.ClientTimeout(total=...): floats work.
            timeout=cast(int, timeout),
            retry_handlers=[],
        )
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        """Open a pooled connection and check the token with auth.test (→ Permanent(AUTH)).

        Without `start()` the adapter still works, one connection per request, and then owns
        nothing that `close()` would have to release.
        """
        if self._session is None or self._session.closed:
            timeout = aiohttp.ClientTimeout(total=self._timeout)
            self._session = aiohttp.ClientSession(timeout=timeout)
            self._client.session = self._session
        await self._call(self._client.auth_test())

    async def close(self) -> None:
        session, self._session = self._session, None
        self._client.session = None
        if session is not None:
            await session.close()

    async def open_thread(self, title: str) -> str | None:
        return None  # the first message of a conversation becomes the thread parent

    def render(self, post: Post) -> Sequence[Part]:
        """Blocks for the post: heading, context, quote, body in ≤3000-character sections.

        The `text` fallback (notifications, screen readers) has the same content as lines.
        """
        heading = escape(post.heading[:HEADING_LIMIT])
        mention = f"{post.mention} " if post.mention else ""
        head: list[dict[str, Any]] = [_section(f"{mention}*{heading}*")]
        fallback = [f"{mention}{heading}"]
        if post.context:
            head.append(_context([escape(item) for item in post.context]))
            fallback.append(" · ".join(escape(item) for item in post.context))
        sections: list[tuple[dict[str, Any], bool]] = []  # (block, is a piece of the body)
        if post.quote is not None:
            when = f"\n> _{escape(post.quote.when)}_"
            budget = SECTION_LIMIT - len(when)
            pieces = split(post.quote.text, budget, lambda s: len(_quote_lines(escape(s))))
            quoted = [_quote_lines(escape(piece)) for piece in pieces]
            quoted[-1] += when
            sections.extend((_section(text), False) for text in quoted)
        pieces = split(post.body, SECTION_LIMIT, lambda s: len(escape(s)))
        # Slack refuses an empty section; whitespace-only pieces carry nothing visible.
        sections.extend((_section(escape(p)), True) for p in pieces if p.strip())
        return self._pack(heading, fallback, head, sections)

    def _pack(
        self,
        heading: str,
        fallback: list[str],
        head: list[dict[str, Any]],
        sections: list[tuple[dict[str, Any], bool]],
    ) -> list[Part]:
        """Spread blocks over as few messages as Slack's per-message limits allow.

        Later messages carry a "(2/3)" marker and the heading, but not the mention again.
        """
        messages: list[list[tuple[dict[str, Any], bool]]] = [[]]
        size = sum(_length(block) for block in head)
        for block, is_body in sections:
            blocks = len(messages[-1]) + (len(head) if len(messages) == 1 else 1)
            if blocks >= BLOCKS_PER_MESSAGE or size + _length(block) > CHARS_PER_MESSAGE:
                messages.append([])
                size = 0
            messages[-1].append((block, is_body))
            size += _length(block)
        parts = []
        for number, message in enumerate(messages, start=1):
            if number == 1:
                top, lines = head, fallback
            else:
                marker = f"({number}/{len(messages)})"
                top, lines = [_context([marker])], [f"{heading} {marker}"]
            text = "\n".join([*lines, *_fallback(message)])
            parts.append(Part(text=text, extra={"blocks": [*top, *(b for b, _ in message)]}))
        return parts

    async def send(self, part: Part, thread: str | None) -> Sent:
        """chat.postMessage under `thread` (a parent `ts`); link unfurling off."""
        response = await self._call(
            self._client.chat_postMessage(
                channel=self.channel,
                text=part.text,
                blocks=_blocks(part),
                thread_ts=thread,
                unfurl_links=False,
                unfurl_media=False,
            )
        )
        ts, channel = str(response["ts"]), str(response.get("channel") or self.channel)
        return Sent(chat=channel, message=ts, thread=thread or ts)

    async def edit(self, sent: Sent, part: Part) -> None:
        """chat.update of an earlier message."""
        await self._call(
            self._client.chat_update(
                channel=sent.chat, ts=sent.message, text=part.text, blocks=_blocks(part)
            )
        )

    async def react(self, sent: Sent, emoji: str) -> None:
        """reactions.add; `emoji` is a Unicode emoji (mapped to its Slack name) or a name."""
        name = _EMOJI_NAMES.get(emoji, emoji.strip(":"))
        try:
            await self._call(
                self._client.reactions_add(channel=sent.chat, timestamp=sent.message, name=name)
            )
        except Permanent as error:
            if "already_reacted" not in error.detail:
                raise

    async def _call(self, request: Awaitable[AsyncSlackResponse]) -> AsyncSlackResponse:
        where = f"slack destination '{self.name}' (channel {self.channel})"
        try:
            return await request
        except SlackApiError as error:
            raise _classify(where, error) from None
        except TimeoutError:
            raise Retryable(Reason.TIMEOUT, f"{where}: no answer in {self._timeout:g}s") from None
        except aiohttp.ClientError as error:
            detail = f"{where}: connection failed ({type(error).__name__})"
            raise Retryable(Reason.CONNECTION, detail) from None


def _classify(where: str, error: SlackApiError) -> Retryable | Permanent:
    response = error.response
    data = response.data if isinstance(response.data, dict) else {}
    code = str(data.get("error") or "")
    status = int(response.status_code)
    if status == 429:
        retry_after = response.headers.get("Retry-After")
        return Retryable(
            Reason.RATE_LIMITED,
            f"{where}: rate limited (HTTP 429)",
            retry_after=float(retry_after) if retry_after else None,
        )
    if status >= 500:
        return Retryable(Reason.SERVER, f"{where}: Slack answered HTTP {status}")
    if code in _RETRYABLE_ERRORS:
        reason = Reason.RATE_LIMITED if "limited" in code else Reason.SERVER
        return Retryable(reason, f"{where}: {code}")
    detail = f"{where}: {code or f'HTTP {status}'}{_HINTS.get(code, '')}"
    if code in ("channel_not_found", "is_archived"):
        return Permanent(Reason.NOT_FOUND, detail)
    if code == "not_in_channel":
        return Permanent(Reason.FORBIDDEN, detail)
    if code in _AUTH_ERRORS:
        return Permanent(Reason.AUTH, detail)
    return Permanent(Reason.BAD_REQUEST, detail)


def _fallback(message: list[tuple[dict[str, Any], bool]]) -> list[str]:
    """Quote sections as lines, then the body pieces joined back into one text."""
    lines = [block["text"]["text"] for block, is_body in message if not is_body]
    body = "".join(block["text"]["text"] for block, is_body in message if is_body)
    return [*lines, body] if body else lines


def _blocks(part: Part) -> list[dict[str, Any]] | None:
    blocks = part.extra.get("blocks")
    return blocks if isinstance(blocks, list) else None


def _length(block: dict[str, Any]) -> int:
    if block["type"] == "context":
        return sum(len(element["text"]) for element in block["elements"])
    return len(block["text"]["text"])
