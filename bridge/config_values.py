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


def receiver_pattern(pattern: str) -> tuple[str, bool]:
    """`"+32 460 20 00 00"` → exact E.164 digits; `"3246*"` → a prefix of them."""
    if pattern.endswith("*"):
        digits = phones.key(pattern[:-1])
        if not digits.isdigit():
            raise ValueError(f"{pattern!r}: a prefix pattern is digits followed by *")
        return digits, True
    return phones.parse(pattern), False


def label_value(label: str, value: str) -> str:
    """Matcher values in the form labels have: codes as plain numbers, numbers as digits."""
    value = value.strip()
    if label.startswith("delivery_code"):
        return value.lstrip("0") or "0"
    if label in ("receiver", "sender"):
        return phones.key(value)
    return value
