"""Slack destination: posts as Block Kit messages with slack-sdk's AsyncWebClient.

Threads are Slack's own: the first message of a conversation is the parent and its `ts` is the
thread reference. Customer text is untrusted: its words go into `rich_text` blocks as `text`
elements, which Slack shows exactly as written (no bold from `*now*`, no mention from
`<!channel>`), with its http(s) URLs as `link` elements. Elsewhere (headings, context, the `text`
fallback) only `&`, `<`, `>` are escaped (Slack's rule), which is enough to show `<!channel>` or
`<https://evil|bank.com>` literally instead of acting on them. Everywhere, direction overrides
and invisible characters are removed first (`text.neutralise`).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Sequence
from typing import Any, NamedTuple, cast

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.web.async_slack_response import AsyncSlackResponse

from bridge.chat.spacing import Spacing, leaving
from bridge.errors import Permanent, Reason, Retryable
from bridge.language import ENGLISH, Words

from . import slack_text
from .base import (
    ORIGIN,
    Found,
    MessageGone,
    Moment,
    Origin,
    Part,
    Post,
    Sent,
    TokenRefused,
    Tone,
)
from .split import split
from .text import neutralise

log = logging.getLogger(__name__)

SECTION_LIMIT = 3000  # characters of a section block's text, and of a rich_text block's
BLOCKS_PER_MESSAGE = 45  # Slack allows 50; leave room for the heading and the part marker
CHARS_PER_MESSAGE = 36_000  # Slack truncates text at 40,000; leave room for the heading
HEADING_LIMIT = 2000
METADATA_EVENT = "smsbridge_post"  # the event_type of the metadata on every bridge post
LOOKUP_PAGE, LOOKUP_PAGES = 200, 5  # how far back a job taken over looks for its own post
CUSTOMIZE_SCOPE = "chat:write.customize"
CUSTOMER_ICON = ":bust_in_silhouette:"  # customer posts, shown under the customer's number
_TONE_MARKS = {Tone.PLAIN: "", Tone.FIRING: ":red_circle: ", Tone.RESOLVED: ":large_green_circle: "}
# An http(s) URL up to the next space or angle bracket; trailing punctuation is not part of it.
_URL = re.compile(r"https?://[^\s<>\"|]+", re.IGNORECASE)
_URL_TRAILING = ".,;:!?)]}'\""

_RETRYABLE_ERRORS = {
    "internal_error",
    "fatal_error",
    "service_unavailable",
    "request_timeout",
    "ratelimited",
    "rate_limited",
}
# Slack's errors that refuse the bot token itself.
TOKEN_REFUSED = frozenset(
    {"invalid_auth", "not_authed", "account_inactive", "token_revoked", "token_expired"}
)
_HINTS = {
    "channel_not_found": " — check the channel id and invite the bot to the channel",
    "not_in_channel": " — invite the bot to the channel",
    "is_archived": " — the channel is archived; unarchive it or configure another",
    "invalid_auth": " — check the bot token",
    "missing_scope": " — the Slack app needs the chat:write and reactions:write scopes",
}
# The worker names reactions with Unicode emoji (Telegram's form); Slack wants names.
_EMOJI_NAMES = {
    "👍": "+1",
    "👎": "-1",
    "👌": "ok_hand",
    "🤔": "thinking_face",
    "👀": "eyes",
    "✅": "white_check_mark",
    "❌": "x",
    "🔥": "fire",
}


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


def inline(text: str, style: dict[str, bool] | None = None) -> list[dict[str, Any]]:
    """Rich-text elements showing `text` exactly: `text` elements, and a `link` element for
    each http(s) URL. Nothing in a `text` element is parsed as mrkdwn or as a mention."""
    elements: list[dict[str, Any]] = []
    position = 0
    for match in _URL.finditer(text):
        url = match.group().rstrip(_URL_TRAILING)
        if match.start() > position:
            elements.append(_text(text[position : match.start()], style))
        elements.append({"type": "link", "url": url, "text": url})
        position = match.start() + len(url)
    if position < len(text):
        elements.append(_text(text[position:], style))
    return elements


def _text(text: str, style: dict[str, bool] | None) -> dict[str, Any]:
    element: dict[str, Any] = {"type": "text", "text": text}
    if style:
        element["style"] = style
    return element


def _rich(kind: str, text: str, *more: dict[str, Any]) -> dict[str, Any]:
    """A rich_text block: one `kind` element (section or quote) holding `text`, then `more`."""
    return {
        "type": "rich_text",
        "elements": [{"type": kind, "elements": inline(text)}, *more],
    }


class _Block(NamedTuple):
    block: dict[str, Any]
    fallback: str  # the same content as `text` fallback (escaped: notifications parse it)
    is_body: bool  # a piece of a body: pieces of one body are joined without a line break


def _words(post: Post) -> list[_Block]:
    """The customer's words of a post: its quote, then its body, as rich_text blocks."""
    blocks: list[_Block] = []
    if post.quote is not None:
        quoted, when = neutralise(post.quote.text), neutralise(post.quote.when)
        pieces = split(quoted, SECTION_LIMIT - len(when))
        for number, piece in enumerate(pieces, start=1):
            dated = [] if number < len(pieces) else [_dated(when)]
            blocks.append(
                _Block(
                    _rich("rich_text_quote", piece, *dated),
                    _quote_lines(escape(piece)) + (f"\n> _{escape(when)}_" if dated else ""),
                    False,
                )
            )
    # Slack refuses an empty element; whitespace-only pieces carry nothing visible.
    blocks.extend(
        _Block(_rich("rich_text_section", piece), escape(piece), True)
        for piece in split(neutralise(post.body), SECTION_LIMIT)
        if piece.strip()
    )
    return blocks


class SlackAdapter:
    """Posts to one Slack channel. `render` → blocks; `send`/`edit`/`react` map errors."""

    def __init__(
        self,
        name: str,
        token: str,
        channel: str,
        base_url: str = "https://slack.com/api/",
        timeout: float = 10.0,
        spacing: Spacing | None = None,
        words: Words = ENGLISH,
    ) -> None:
        self.name = name
        self.channel = channel
        self._words = words  # the destination's language, for the few words said here
        self._spacing = spacing  # chat.postMessage's pace per channel (pacing.Spacing)
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
        self._names: dict[str, str] = {}  # member id → display name, for agents' mentions
        self.customize: bool | None = None  # chat:write.customize held; None: not known yet
        self.team: str | None = None  # the token's workspace (auth.test); None: not started

    async def start(self) -> None:
        """Open a pooled connection and check the token with auth.test (→ TokenRefused).

        auth.test also tells the token's scopes (`x-oauth-scopes`): with
        `chat:write.customize`, customer messages are posted under the customer's number; and
        its workspace (`team`), whose members alone may answer customers.
        Without `start()` the adapter still works, one connection per request, and then owns
        nothing that `close()` would have to release.
        """
        if self._session is None or self._session.closed:
            timeout = aiohttp.ClientTimeout(total=self._timeout)
            self._session = aiohttp.ClientSession(timeout=timeout)
            self._client.session = self._session
        response = await self._call(self._client.auth_test())
        self.team = str(response.get("team_id") or "") or None
        if self.customize is None:
            header = next(
                (v for k, v in response.headers.items() if k.lower() == "x-oauth-scopes"), ""
            )
            scopes = {scope.strip() for scope in str(header).split(",")}
            self.customize = CUSTOMIZE_SCOPE in scopes
            if not self.customize:
                log.info(
                    "slack destination '%s': the token lacks %s, so customer messages are "
                    "posted under the bot's name (add the scope to show the customer's number)",
                    self.name,
                    CUSTOMIZE_SCOPE,
                )

    async def close(self) -> None:
        session, self._session = self._session, None
        self._client.session = None
        if session is not None:
            await session.close()

    async def open_thread(self, title: str) -> str | None:
        return None  # the first message of a conversation becomes the thread parent

    def render(self, post: Post) -> Sequence[Part]:
        """Blocks for the post: heading, context, then the customer's words (quote and body)
        as rich_text blocks of ≤3000 characters, shown exactly as written, URLs as links; then
        each of `post.more` the same way under its own context line.

        The `text` fallback (notifications, screen readers) has the same content as lines; for
        a customer's post (`author`) the customer's words come first, so a push preview shows
        them. Posted under the customer's number (chat:write.customize), a `titled` post does
        not repeat it as its heading. The `moment` is a `<!date>`: each reader sees their clock.
        """
        shown_as_author = post.titled and bool(self.customize)
        heading = "" if shown_as_author else escape(post.heading[:HEADING_LIMIT])
        mention = f"{post.mention} " if post.mention else ""
        head: list[dict[str, Any]] = []
        fallback: list[str] = []
        mark = _TONE_MARKS[post.tone]
        if heading or mention:
            title = f"*{heading}*" if heading else ""
            head.append(_section(f"{mention}{mark}{title}".rstrip()))
            fallback.append(f"{mention}{mark}{heading}".rstrip())
        context = [escape(item) for item in post.context]
        dated = [*context]
        if post.moment is not None:
            context.append(escape(post.moment.text))
            dated.append(_date(post.moment))
        if context:
            head.append(_context(dated))
            fallback.append(" · ".join(context))
        blocks = _words(post)
        for later in post.more:
            if later.context:
                small = [escape(item) for item in later.context]
                blocks.append(_Block(_context(small), " · ".join(small), False))
            blocks.extend(_words(later))
        parts = self._pack(
            heading or self._words.gettext("(continued)"),
            fallback,
            head,
            blocks,
            words_first=post.author is not None,
        )
        if post.author:
            author = neutralise(post.author)
            parts = [Part(p.text, {**p.extra, "author": author}) for p in parts]
        return parts

    def _pack(
        self,
        heading: str,
        fallback: list[str],
        head: list[dict[str, Any]],
        blocks: list[_Block],
        *,
        words_first: bool = False,
    ) -> list[Part]:
        """Spread blocks over as few messages as Slack's per-message limits allow.

        When there are several, the first says `(1/3)` and later ones carry a `(2/3)` marker
        and the heading, but not the mention again. `words_first`: the first message's
        fallback text starts with the blocks' words, then the heading and context.
        """
        messages: list[list[_Block]] = [[]]
        size = sum(_length(block) for block in head)
        for block in blocks:
            count = len(messages[-1]) + (len(head) if len(messages) == 1 else 1)
            if count >= BLOCKS_PER_MESSAGE or size + _length(block.block) > CHARS_PER_MESSAGE:
                messages.append([])
                size = 0
            messages[-1].append(block)
            size += _length(block.block)
        parts = []
        total = len(messages)
        for number, message in enumerate(messages, start=1):
            marker = f"({number}/{total})"
            if number == 1:
                top, lines = list(head), list(fallback)
                if total > 1:
                    top.append(_context([marker]))
                    lines.append(marker)
            else:
                top, lines = [_context([marker])], [f"{heading} {marker}"]
            words = _fallback(message)
            ordered = [*words, *lines] if words_first and number == 1 else [*lines, *words]
            text = "\n".join(ordered) or " "
            parts.append(Part(text=text, extra={"blocks": [*top, *(b.block for b in message)]}))
        return parts

    async def send(self, part: Part, thread: str | None) -> Sent:
        """chat.postMessage under `thread` (a parent `ts`); link unfurling off."""
        author = part.extra.get("author")
        customer = isinstance(author, str) and bool(self.customize)
        async with leaving(self._spacing):
            response = await self._call(
                self._client.chat_postMessage(
                    channel=self.channel,
                    text=part.text,
                    blocks=_blocks(part),
                    thread_ts=thread,
                    unfurl_links=False,
                    unfurl_media=False,
                    username=str(author) if customer else None,
                    icon_emoji=CUSTOMER_ICON if customer else None,
                    metadata=_metadata(part.extra.get(ORIGIN)),
                )
            )
        ts, channel = str(response["ts"]), str(response.get("channel") or self.channel)
        return Sent(chat=channel, message=ts, thread=thread or ts)

    async def reply(self, sent: Sent, part: Part) -> Sent:
        """A reply in the message's thread (`thread_ts`): its followers are notified."""
        return await self.send(part, sent.message)

    async def find_posted(self, origin: Origin, thread: str | None, since: float) -> Found | None:
        """The bridge's own post showing `origin`, by its metadata: in the thread's replies
        (conversations.replies) or the channel's top-level messages (conversations.history),
        no older than `since` and at most `LOOKUP_PAGES` pages back."""
        cursor = None
        for _ in range(LOOKUP_PAGES):
            arguments: dict[str, Any] = {
                "channel": self.channel,
                "oldest": f"{since:.6f}",
                "limit": LOOKUP_PAGE,
                "include_all_metadata": True,
                "cursor": cursor,
            }
            try:
                if thread is None:
                    response = await self._call(self._client.conversations_history(**arguments))
                else:
                    response = await self._call(
                        self._client.conversations_replies(ts=thread, **arguments)
                    )
            except Permanent as error:  # no channels:history scope, say: post without looking
                log.warning("cannot look for an earlier post (%s): posting it", error.detail)
                return None
            for message in response.get("messages") or []:
                posted = _origin(message.get("metadata"))
                if posted is not None and _shows(posted, origin):
                    ts = str(message["ts"])
                    return Found(Sent(chat=self.channel, message=ts, thread=thread or ts), posted)
            cursor = (response.get("response_metadata") or {}).get("next_cursor")
            if not response.get("has_more") or not cursor:
                return None
        return None

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

    async def unreact(self, sent: Sent, emoji: str) -> None:
        """reactions.remove; a reaction already gone counts as removed."""
        name = _EMOJI_NAMES.get(emoji, emoji.strip(":"))
        try:
            await self._call(
                self._client.reactions_remove(channel=sent.chat, timestamp=sent.message, name=name)
            )
        except Permanent as error:
            if "no_reaction" not in error.detail and "message_not_found" not in error.detail:
                raise

    async def plain_text(self, text: str) -> str:
        """Slack markup → plain text; `<@U…>` mentions become display names (users.info)."""
        for member in dict.fromkeys(slack_text.MENTION.findall(text)):
            if member not in self._names:
                try:
                    response = await self._call(self._client.users_info(user=member))
                except Permanent:
                    continue  # no users:read scope, or gone: the id stays
                user = response.get("user") or {}
                profile = user.get("profile") or {}
                name = profile.get("display_name") or profile.get("real_name") or user.get("name")
                if name:
                    self._names[member] = str(name)
        return slack_text.plain(text, self._names)

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
    if code == "message_not_found":
        return MessageGone(Reason.NOT_FOUND, detail)
    if code in ("channel_not_found", "is_archived"):
        return Permanent(Reason.NOT_FOUND, detail)
    if code == "not_in_channel":
        return Permanent(Reason.FORBIDDEN, detail)
    if code in TOKEN_REFUSED:
        return TokenRefused(Reason.AUTH, detail)
    if code == "missing_scope":
        return Permanent(Reason.AUTH, detail)
    return Permanent(Reason.BAD_REQUEST, detail)


def _fallback(message: list[_Block]) -> list[str]:
    """Context and quote blocks as lines, each body's pieces joined back into one text."""
    lines: list[str] = []
    joins = False  # the previous block was a piece of a body
    for block in message:
        if block.is_body and joins:
            lines[-1] += block.fallback
        else:
            lines.append(block.fallback)
        joins = block.is_body
    return lines


def _date(moment: Moment) -> str:
    """`<!date^…>`: Slack shows the time on each reader's own clock, `text` where it cannot."""
    return f"<!date^{int(moment.at)}^{{date_short_pretty}} {{time}}|{escape(moment.text)}>"


def _dated(when: str) -> dict[str, Any]:
    return {"type": "rich_text_section", "elements": [_text(when, {"italic": True})]}


def _metadata(origin: object) -> dict[str, Any] | None:
    """Message metadata naming the outbox job and part a post shows (`find_posted`), and the
    further jobs a combined post shows, as a list of objects (Slack's typed payload form)."""
    if not isinstance(origin, Origin):
        return None
    payload: dict[str, Any] = {"job": origin.job, "part": origin.part}
    if origin.combined:
        payload["combined"] = [{"job": job} for job in origin.combined]
    return {"event_type": METADATA_EVENT, "event_payload": payload}


def _origin(metadata: object) -> Origin | None:
    """What a message's metadata says it shows; None for anything but the bridge's own."""
    if not isinstance(metadata, dict) or metadata.get("event_type") != METADATA_EVENT:
        return None
    payload = metadata.get("event_payload")
    if not isinstance(payload, dict):
        return None
    job, part, combined = payload.get("job"), payload.get("part"), payload.get("combined", [])
    if not isinstance(job, int) or not isinstance(part, int) or not isinstance(combined, list):
        return None
    further = [item.get("job") if isinstance(item, dict) else None for item in combined]
    jobs = tuple(other for other in further if isinstance(other, int))
    return Origin(job, part, jobs) if len(jobs) == len(further) else None


def _shows(posted: Origin, wanted: Origin) -> bool:
    """Whether a post made for `posted` shows `wanted`: the same job and part, or part 0 of
    any job that both name (a combined post shows part 0 of each of its jobs)."""
    if (posted.job, posted.part) == (wanted.job, wanted.part):
        return True
    return posted.part == wanted.part == 0 and bool(posted.jobs & wanted.jobs)


def _blocks(part: Part) -> list[dict[str, Any]] | None:
    blocks = part.extra.get("blocks")
    return blocks if isinstance(blocks, list) else None


def _length(block: dict[str, Any]) -> int:
    if block["type"] == "context":
        return sum(len(element["text"]) for element in block["elements"])
    if block["type"] == "rich_text":
        return sum(
            len(child.get("text", "")) + len(child.get("url", ""))
            for element in block["elements"]
            for child in element["elements"]
        )
    return len(block["text"]["text"])
