"""Console destination: prints each post as a readable block (development and dry runs).

Customer text is untrusted here too: escape sequences and control characters are removed so an
SMS cannot move the cursor, recolour, retitle or clear the operator's terminal.
"""

from __future__ import annotations

import itertools
import re
import sys
from collections.abc import Sequence
from dataclasses import replace
from typing import TextIO

from bridge.language import ENGLISH, N_, Words

from .base import Found, Origin, Part, Post, Sent, Tone
from .text import neutralise

# ANSI/VT escape sequences (CSI, OSC, DCS/SOS/PM/APC strings, two-byte ESC sequences) first, then
# any remaining C0 control except tab and newline, DEL and C1 controls.
_ESCAPES = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]"
    r"|\x1b[\]PX^_].*?(?:\x07|\x1b\\|$)"
    r"|\x1b[ -/]*[0-~]?",
    re.DOTALL,
)
_TONE_MARKS = {Tone.PLAIN: "", Tone.FIRING: N_("[FIRING] "), Tone.RESOLVED: N_("[RESOLVED] ")}
_CONTROLS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def sanitize(text: str) -> str:
    """`text` without terminal escape sequences or control characters (tab, newline kept),
    nor direction overrides and invisible characters (`text.neutralise`)."""
    return neutralise(_CONTROLS.sub("", _ESCAPES.sub("", text)))


class ConsoleAdapter:
    """Writes posts to a stream (stdout by default); message and thread refs are counters. Its
    own few words (tone marks, the line above each post) are in the destination's `words`."""

    def __init__(self, name: str, stream: TextIO | None = None, words: Words = ENGLISH) -> None:
        self.name = name
        self._stream = stream
        self._words = words
        self._numbers = itertools.count(1)

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def open_thread(self, title: str) -> str | None:
        return None  # a conversation's thread is its first message, as in Slack

    def render(self, post: Post) -> Sequence[Part]:
        """One block: heading, indented context and quote, then the body; then each of
        `post.more` the same way."""
        lines = [f"{sanitize(post.mention)} " if post.mention else ""]
        mark = _TONE_MARKS[post.tone]
        lines[0] += (self._words.gettext(mark) if mark else "") + sanitize(post.heading)
        if not lines[0]:
            lines.pop()  # a later post in a thread: its context says enough
        moment = (post.moment.text,) if post.moment is not None else ()
        for entry in (replace(post, context=(*post.context, *moment)), *post.more):
            if entry.context:
                lines.append("  " + " · ".join(sanitize(item) for item in entry.context))
            if entry.quote is not None:
                lines.extend(f"  > {line}" for line in sanitize(entry.quote.text).split("\n"))
                lines.append(f"  > — {sanitize(entry.quote.when)}")
            if entry.body:
                lines.append(sanitize(entry.body))
        return [Part(text="\n".join(lines))]

    async def send(self, part: Part, thread: str | None) -> Sent:
        number = str(next(self._numbers))
        where = (
            self._words.gettext("new thread #{number}", number=number)
            if thread is None
            else self._words.gettext("thread #{thread}", thread=thread)
        )
        self._write(f"── {self.name} · {where} ──", part.text)
        return Sent(chat=self.name, message=number, thread=thread or number)

    async def reply(self, sent: Sent, part: Part) -> Sent:
        return await self.send(part, sent.message)

    async def find_posted(self, origin: Origin, thread: str | None, since: float) -> Found | None:
        return None  # stdout keeps nothing to look in

    async def edit(self, sent: Sent, part: Part) -> None:
        edit = self._words.gettext(
            "edit of #{ref} (thread #{thread})", ref=sent.message, thread=sent.thread
        )
        header = f"── {self.name} · {edit} ──"
        self._write(header, part.text)

    async def react(self, sent: Sent, emoji: str) -> None:
        said = self._words.gettext(
            "#{ref} reacted {emoji}", ref=sent.message, emoji=sanitize(emoji)
        )
        self._write(f"── {self.name} · {said} ──")

    async def unreact(self, sent: Sent, emoji: str) -> None:
        said = self._words.gettext(
            "#{ref} unreacted {emoji}", ref=sent.message, emoji=sanitize(emoji)
        )
        self._write(f"── {self.name} · {said} ──")

    async def plain_text(self, text: str) -> str:
        return text.strip()

    def _write(self, *lines: str) -> None:
        # Resolved per call so a redirected or captured sys.stdout is honoured.
        stream = self._stream or sys.stdout
        stream.write("\n".join(lines) + "\n\n")
        stream.flush()
