"""Slack's message formats as HTML: mrkdwn text and Block Kit blocks, escaped for the page.

Only what Slack shows is rendered: `*bold*`, `_italic_`, `~strike~`, `` `code` ``, `>` quotes,
`<url|text>` links, `<!date^…|fallback>` as its fallback, mentions by the names given, the
emoji shortcodes in `EMOJI`; rich_text sections, quotes, preformatted text and lists;
section, context, header and divider blocks. Anything else shows as its text.
"""

from __future__ import annotations

import html
import re
from collections.abc import Mapping
from typing import Any

# The shortcodes the bridge's messages use; another one is shown as written, as Slack shows
# an unknown one.
EMOJI = {
    "white_check_mark": "✅",
    "ok_hand": "👌",
    "+1": "👍",
    "-1": "👎",
    "eyes": "👀",
    "thinking_face": "🤔",
    "red_circle": "🔴",
    "large_green_circle": "🟢",
    "bust_in_silhouette": "👤",
    "warning": "⚠️",
}
_SPECIAL = re.compile(r"<([^<>\n]+)>|`([^`\n]+)`")
_STYLES = [
    (re.compile(rf"(?<![\w{mark}]){mark}(?=\S)([^{mark}\n]+?)(?<=\S){mark}(?![\w{mark}])"), tag)
    for mark, tag in (("\\*", "b"), ("_", "i"), ("~", "s"))
]
_SHORTCODE = re.compile(r":([a-z0-9_+\-]+):")


def emoji(name: str) -> str:
    """The emoji a shortcode name stands for, or the shortcode as written."""
    return EMOJI.get(name, f":{name}:")


def _unslack(text: str) -> str:
    """Slack's three escapes undone: what the reader sees."""
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def _plain(text: str) -> str:
    """Escaped text with mrkdwn's bold, italic and strike and the known shortcodes applied."""
    shown = html.escape(_unslack(text), quote=False)
    for pattern, tag in _STYLES:
        shown = pattern.sub(rf"<{tag}>\1</{tag}>", shown)
    return _SHORTCODE.sub(lambda match: html.escape(emoji(match.group(1))), shown)


def _angle(inner: str, names: Mapping[str, str]) -> str:
    """One `<…>` of mrkdwn: a date, a mention or a link."""
    target, _, label = inner.partition("|")
    if target.startswith("!date^"):
        return html.escape(_unslack(label or target))
    if target.startswith("!subteam^"):
        shown = label or "@" + names.get(target.removeprefix("!subteam^"), "group")
        return f'<span class="mention">{html.escape(shown)}</span>'
    if target.startswith("@"):
        shown = "@" + names.get(target[1:], label or target[1:])
        return f'<span class="mention">{html.escape(shown)}</span>'
    if target.startswith("!"):
        return f'<span class="mention">@{html.escape(target[1:])}</span>'
    href = html.escape(_unslack(target))
    return f'<a href="{href}">{html.escape(_unslack(label or target))}</a>'


def _inline(text: str, names: Mapping[str, str]) -> str:
    shown, position = [], 0
    for match in _SPECIAL.finditer(text):
        shown.append(_plain(text[position : match.start()]))
        if match.group(1) is not None:
            shown.append(_angle(match.group(1), names))
        else:
            shown.append(f"<code>{html.escape(_unslack(match.group(2)))}</code>")
        position = match.end()
    shown.append(_plain(text[position:]))
    return "".join(shown)


def mrkdwn(text: str, names: Mapping[str, str]) -> str:
    """mrkdwn as HTML: lines starting with `>` make a quote, the rest is inline text."""
    shown: list[str] = []
    quote: list[str] = []
    for line in text.split("\n"):
        if line.startswith(">"):
            quote.append(_inline(line[1:].removeprefix(" "), names))
            continue
        if quote:
            shown.append(f"<blockquote>{'<br>'.join(quote)}</blockquote>")
            quote = []
        shown.append(_inline(line, names) + "<br>")
    if quote:
        shown.append(f"<blockquote>{'<br>'.join(quote)}</blockquote>")
    return "".join(shown).removesuffix("<br>")


def _rich_inline(element: dict[str, Any], names: Mapping[str, str]) -> str:
    kind = element.get("type")
    if kind == "link":
        href = html.escape(str(element.get("url", "")))
        return f'<a href="{href}">{html.escape(str(element.get("text") or href))}</a>'
    if kind == "emoji":
        return html.escape(emoji(str(element.get("name", ""))))
    if kind == "user":
        name = names.get(str(element.get("user_id", "")), "someone")
        return f'<span class="mention">@{html.escape(name)}</span>'
    shown = html.escape(str(element.get("text", "")), quote=False)
    style = element.get("style") or {}
    for key, tag in (("bold", "b"), ("italic", "i"), ("strike", "s"), ("code", "code")):
        if style.get(key):
            shown = f"<{tag}>{shown}</{tag}>"
    return shown


def _rich_element(element: dict[str, Any], names: Mapping[str, str]) -> str:
    children = element.get("elements") or []
    kind = element.get("type")
    if kind == "rich_text_list":
        tag = "ol" if element.get("style") == "ordered" else "ul"
        items = "".join(f"<li>{_rich_element(child, names)}</li>" for child in children)
        return f"<{tag}>{items}</{tag}>"
    inner = "".join(_rich_inline(child, names) for child in children)
    tag = {"rich_text_quote": "blockquote", "rich_text_preformatted": "pre"}.get(str(kind), "div")
    return f'<{tag} class="rich">{inner}</{tag}>'


def _text_object(text: dict[str, Any], names: Mapping[str, str]) -> str:
    if text.get("type") == "mrkdwn":
        return mrkdwn(str(text.get("text", "")), names)
    return html.escape(str(text.get("text", "")), quote=False)


def block(shown: dict[str, Any], names: Mapping[str, str]) -> str:
    """One Block Kit block as HTML."""
    kind = shown.get("type")
    if kind == "rich_text":
        inner = "".join(_rich_element(e, names) for e in shown.get("elements") or [])
        return f'<div class="block rich-text">{inner}</div>'
    if kind == "context":
        items = "".join(
            f"<span>{_text_object(element, names)}</span>"
            for element in shown.get("elements") or []
            if "text" in element
        )
        return f'<div class="block context">{items}</div>'
    if kind == "header":
        return f'<div class="block header">{_text_object(shown.get("text") or {}, names)}</div>'
    if kind == "divider":
        return '<hr class="block">'
    fields = "".join(
        f"<div>{_text_object(field, names)}</div>" for field in shown.get("fields") or []
    )
    text = _text_object(shown.get("text") or {}, names)
    return f'<div class="block section">{text}{fields}</div>'
