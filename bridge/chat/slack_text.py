"""Slack message markup → the plain text an SMS carries.

`<https://x|label>` becomes `label (https://x)`, `<@U…>` the member's name (looked up by the
caller), `:emoji:` shortcodes Unicode, `*bold*`/`_italic_`/`~strike~`/`` `code` `` marks are
dropped and `&amp;`, `&lt;`, `&gt;` unescaped, last, so escaped text never becomes markup.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

_ANGLE = re.compile(r"<([^<>]*)>")
MENTION = re.compile(r"<@([UW][A-Z0-9]+)(?:\|[^>]*)?>")
_SHORTCODE = re.compile(r":([a-z0-9_+\-]+):")
_MARKS = re.compile(r"(?<![\w*_~`])([*_~]|```|`)(?=\S)(.+?)(?<=\S)\1(?![\w*_~`])", re.S)

# The shortcodes agents type most; an unknown one stays as typed, which an SMS reader gets.
EMOJI = {
    "+1": "👍",
    "thumbsup": "👍",
    "-1": "👎",
    "smile": "😄",
    "slightly_smiling_face": "🙂",
    "wink": "😉",
    "heart": "❤️",
    "pray": "🙏",
    "tada": "🎉",
    "white_check_mark": "✅",
    "ok_hand": "👌",
    "wave": "👋",
    "joy": "😂",
    "sweat_smile": "😅",
    "thinking_face": "🤔",
    "eyes": "👀",
    "fire": "🔥",
    "star": "⭐",
    "sunny": "☀️",
    "phone": "☎️",
    "email": "📧",
    "calendar": "📆",
    "clock3": "🕒",
    "x": "❌",
}


def plain(text: str, names: Mapping[str, str]) -> str:
    """`text` as Slack sent it, as plain text; `names` maps member ids to display names."""

    def angle(match: re.Match[str]) -> str:
        inner = match.group(1)
        target, _, label = inner.partition("|")
        if target.startswith("@"):
            return "@" + names.get(target[1:], label or target[1:])
        if target.startswith("#"):
            return "#" + (label or target[1:])
        if target.startswith("!"):
            return "@" + (label or target[1:].split("^")[0])
        if target.startswith("mailto:"):
            return label or target.removeprefix("mailto:")
        if label and label != target:
            return f"{label} ({target})"
        return target

    text = _ANGLE.sub(angle, text)
    text = _SHORTCODE.sub(lambda m: EMOJI.get(m.group(1), m.group(0)), text)
    text = _MARKS.sub(lambda m: m.group(2), text)
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&").strip()
