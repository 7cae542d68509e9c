"""The small values a config file writes as text: durations, rates, receiver patterns and
alert matcher values, each turned into the form the bridge compares against.

Pure functions: a bad value raises `ValueError` with a sentence the config loader shows next
to the file and key.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import BeforeValidator

from bridge import phones

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(value: object) -> float:
    """`30s`, `5m`, `4h`, `7d` (or a number of seconds) → seconds."""
    if isinstance(value, bool):
        raise ValueError("expected a duration like 30s, 5m, 4h or 7d")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        match = _DURATION.match(str(value))
        if not match:
            raise ValueError(f"{value!r} is not a duration like 30s, 5m, 4h or 7d")
        seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    if seconds < 0:
        raise ValueError("a duration cannot be negative")
    return seconds


Duration = Annotated[float, BeforeValidator(parse_duration)]


def format_duration(seconds: float) -> str:
    """`30d`, `4h`, `90s`: the largest unit that divides it."""
    for unit in ("d", "h", "m", "s"):
        if seconds and seconds % _UNIT_SECONDS[unit] == 0:
            return f"{seconds / _UNIT_SECONDS[unit]:g}{unit}"
    return f"{seconds:g}s"


_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*/\s*(s|m|h)\s*$")
_PER = {"s": 1.0, "m": 60.0, "h": 3600.0}


def parse_rate(value: object) -> float | None:
    """`1/s`, `20/m`, `500/h` → posts per second; `unlimited` → None."""
    if isinstance(value, str) and value.strip().lower() == "unlimited":
        return None
    match = _RATE.match(str(value))
    if not match or float(match.group(1)) <= 0:
        raise ValueError(f"{value!r} is not a rate like 1/s, 20/m or unlimited")
    return float(match.group(1)) / _PER[match.group(2)]


def receiver_pattern(pattern: str, national: str | None = None) -> tuple[str, bool]:
    """`"+32 460 20 00 00"` → exact E.164 digits; `"3246*"` → a prefix of them. With
    `national` (a region such as "BE"), also a number as written in that country."""
    if pattern.endswith("*"):
        digits = phones.key(pattern[:-1])
        if not digits.isdigit():
            raise ValueError(f"{pattern!r}: a prefix pattern is digits followed by *")
        return digits, True
    return phones.parse(pattern, national), False


def label_value(label: str, value: str) -> str:
    """Matcher values in the form labels have: codes as plain numbers, numbers as digits."""
    value = value.strip()
    if label.startswith("delivery_code"):
        return value.lstrip("0") or "0"
    if label in ("receiver", "sender"):
        return phones.key(value)
    return value


# A Slack conversation id: C… (public channel) or G… (older private channel).
_SLACK_CHANNEL_ID = re.compile(r"^[CG][A-Z0-9]+$")
# The id inside a channel's link: …/archives/C0123ABCDEF or …/client/T0123/C0123ABCDEF.
_SLACK_CHANNEL_LINK = re.compile(r"^https?://[^/]+/(?:archives|client/[A-Z0-9]+)/([CG][A-Z0-9]+)")


def slack_channel(value: object) -> object:
    """A Slack channel id as given, or the id inside a channel's link; a name is refused with
    what an id looks like and where to find it."""
    if not isinstance(value, str):
        return value  # the schema says what type it wants
    text = value.strip()
    link = _SLACK_CHANNEL_LINK.match(text)
    if link:
        return link.group(1)
    if _SLACK_CHANNEL_ID.fullmatch(text):
        return text
    raise ValueError(
        f"{text!r} is not a channel id: Slack needs the id, like C0123ABCDEF (in Slack, open "
        "the channel's name → About, at the bottom: Channel ID; or paste the channel's link)"
    )


# What chat tokens look like: Slack's xoxb-/xoxp-/xapp-, Telegram's <bot id>:<secret>.
_TOKEN_SHAPES = re.compile(r"^(?:xox[a-z]-|xapp-|\d{5,}:[A-Za-z0-9_-]{20,})")
_VARIABLE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def token_variable(value: object) -> object:
    """The name of the environment variable holding a token. A token pasted in its place is
    refused without being repeated."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    if _TOKEN_SHAPES.match(text):
        raise ValueError(
            "this looks like the token itself: put it in an environment variable and name the "
            "variable here (like SLACK_BOT_TOKEN); tokens never live in the config"
        )
    if not _VARIABLE_NAME.fullmatch(text):
        raise ValueError(
            "name the environment variable that holds the token, like SLACK_BOT_TOKEN "
            "(letters, digits and _)"
        )
    return text
