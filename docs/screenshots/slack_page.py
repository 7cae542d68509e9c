"""A channel and one of its threads as a page that looks like the Slack desktop client.

`page(recorded, channel, thread)` shows what the fake Slack received: each post in its final
form (chat.update applied in place, marked "(edited)" as Slack marks it), its reactions, the
agents' own messages, top-level messages in the channel with a summary of their replies,
and the thread's parent and replies in the thread pane.
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from docs.screenshots.day import Recorded
from docs.screenshots.mrkdwn import block, emoji, mrkdwn

APP_NAME = "Smstools Bridge"
WORKSPACE = "Acme Parcels"
CHANNELS = {"C0SUPPORT": "support", "C0ONCALL": "oncall"}
ZONE = ZoneInfo("Europe/Brussels")  # the reader's clock
_CSS = Path(__file__).with_name("slack.css").read_text()
_COLOURS = ("#2bac76", "#e8912d", "#1d9bd1", "#a0447d", "#4a154b")


@dataclass(frozen=True)
class Shown:
    """One message as the client shows it."""

    ts: str
    thread_ts: str | None
    author: str
    avatar: str  # HTML: an emoji or the author's initial on a colour
    is_app: bool
    body: str  # HTML
    edited: bool
    reactions: tuple[str, ...]


def messages(recorded: Recorded, channel: str) -> list[Shown]:
    """Every message of the channel in ts order, each in its final form."""
    shown = []
    for post in recorded.posts:
        if post.channel != channel:
            continue
        edits = [e for e in recorded.edits if e.channel == channel and e.ts == post.ts]
        text, blocks = post.text, post.blocks
        if edits:
            text, blocks = edits[-1].text, edits[-1].blocks
        username, icon = post.params.get("username"), post.params.get("icon_emoji")
        shown.append(
            Shown(
                ts=post.ts,
                thread_ts=post.thread_ts,
                author=str(username or APP_NAME),
                avatar=_avatar(str(username or APP_NAME), icon),
                is_app=True,
                body=_body(text, blocks, recorded.names),
                edited=bool(edits),
                reactions=_reactions(recorded, channel, post.ts),
            )
        )
    for member in recorded.members:
        if member.channel == channel:
            name = recorded.names.get(member.user, member.user)
            shown.append(
                Shown(
                    ts=member.ts,
                    thread_ts=member.thread_ts,
                    author=name,
                    avatar=_avatar(name, None),
                    is_app=False,
                    body=mrkdwn(html.escape(member.text, quote=False), recorded.names),
                    edited=False,
                    reactions=_reactions(recorded, channel, member.ts),
                )
            )
    return sorted(shown, key=lambda message: float(message.ts))


def _body(
    text: str | None, blocks: list[dict[str, object]] | None, names: Mapping[str, str]
) -> str:
    if blocks:
        return "".join(block(dict(shown), names) for shown in blocks)
    return mrkdwn(text or "", names)


def _reactions(recorded: Recorded, channel: str, ts: str) -> tuple[str, ...]:
    return tuple(r.name for r in recorded.reactions if r.channel == channel and r.ts == ts)


def _avatar(name: str, icon: object) -> str:
    if isinstance(icon, str) and icon.startswith(":"):
        return f'<div class="avatar emoji">{html.escape(emoji(icon.strip(":")))}</div>'
    initial = html.escape(name.lstrip("+ ")[:1].upper() or "?")
    colour = _COLOURS[sum(map(ord, name)) % len(_COLOURS)]
    return f'<div class="avatar" style="background:{colour}">{initial}</div>'


def _time(ts: str) -> str:
    return datetime.fromtimestamp(float(ts), ZONE).strftime("%H:%M")


def _message(message: Shown, follows: Shown | None, summary: str = "") -> str:
    """One message; a message by the same author within five minutes of the one before it
    is shown without avatar and name, as Slack groups them."""
    grouped = (
        follows is not None
        and follows.author == message.author
        and float(message.ts) - float(follows.ts) < 300
    )
    edited = ' <span class="edited">(edited)</span>' if message.edited else ""
    reactions = "".join(
        f'<span class="reaction">{html.escape(emoji(name))}<span>1</span></span>'
        for name in message.reactions
    )
    reactions = f'<div class="reactions">{reactions}</div>' if reactions else ""
    if grouped:
        head, meta = '<div class="gutter"></div>', ""
    else:
        badge = '<span class="badge">APP</span>' if message.is_app else ""
        head = message.avatar
        meta = (
            f'<div class="meta"><b>{html.escape(message.author)}</b>{badge}'
            f'<span class="time">{_time(message.ts)}</span></div>'
        )
    return (
        f'<div class="message{" grouped" if grouped else ""}">{head}<div class="content">'
        f'{meta}<div class="body">{message.body}{edited}</div>{reactions}{summary}</div></div>'
    )


def _summary(replies: list[Shown]) -> str:
    """What the channel shows under a message with replies."""
    if not replies:
        return ""
    faces = "".join(dict.fromkeys(reply.avatar for reply in replies))
    count = f"{len(replies)} {'reply' if len(replies) == 1 else 'replies'}"
    last = f"Last reply today at {_time(replies[-1].ts)}"
    return (
        f'<div class="summary"><span class="faces">{faces}</span><b>{count}</b>'
        f'<span class="last">{last}</span></div>'
    )


def _column(shown: list[Shown], summaries: Mapping[str, str]) -> str:
    rows, before = [], None
    for message in shown:
        rows.append(_message(message, before, summaries.get(message.ts, "")))
        before = message
    return "".join(rows)


def page(recorded: Recorded, channel: str, thread: str) -> str:
    """The client's window: the sidebar, `channel`, and `thread` (a parent ts) open beside it."""
    shown = messages(recorded, channel)
    top = [m for m in shown if m.thread_ts is None or m.thread_ts == m.ts]
    replies = {m.ts: [r for r in shown if r.thread_ts == m.ts and r.ts != m.ts] for m in top}
    summaries = {ts: _summary(found) for ts, found in replies.items()}
    (parent,) = [m for m in top if m.ts == thread]
    name = CHANNELS[channel]
    count = len(replies[thread])
    sidebar = "".join(
        f'<div class="channel{" active" if cid == channel else ""}"># {html.escape(label)}</div>'
        for cid, label in CHANNELS.items()
    )
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><style>{_CSS}</style></head><body>
<div class="app">
 <nav class="sidebar"><div class="workspace">{html.escape(WORKSPACE)}</div>
  <div class="section">Channels</div>{sidebar}</nav>
 <main class="pane"><header># {html.escape(name)}</header>
  <div class="scroll"><div class="day"><span>Today</span></div>{_column(top, summaries)}</div>
  <div class="composer">Message #{html.escape(name)}</div></main>
 <aside class="pane thread"><header>Thread <span># {html.escape(name)}</span></header>
  <div class="scroll">{_column([parent], {})}
   <div class="replies-count"><span>{count} {"reply" if count == 1 else "replies"}</span></div>
   {_column(replies[thread], {})}
   <div class="composer">Reply…</div></div></aside>
</div>
<script>document.title = String(document.querySelector('.app').scrollHeight);</script>
</body></html>
"""
