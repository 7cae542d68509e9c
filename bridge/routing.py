"""Which destinations an inbox message goes to, and which lane (conversation) it joins."""

from __future__ import annotations

import re

from bridge.config import Config
from bridge.smstools import InboxMessage

_PUNCTUATION = re.compile(r"[\s+().-]")


def number_key(number: str) -> str:
    """The form numbers are matched and stored in: E.164 digits, or a sender name as given."""
    digits = _PUNCTUATION.sub("", number)
    if digits.startswith("00"):
        digits = digits[2:]
    return digits if digits.isdigit() else number.strip()


def destinations_for(event: InboxMessage, config: Config) -> tuple[str, ...]:
    """First matching route wins; unmatched messages go to `default` (possibly nowhere)."""
    receiver = number_key(event.message.receiver)
    for route in config.routes:
        if route.matches(receiver, event.message.type):
            return route.to
    return config.default


def lane(destination: str, receiver: str, sender: str) -> str:
    """Jobs of one lane are delivered in order; a lane is one customer conversation."""
    return f"{destination}|{number_key(receiver)}|{number_key(sender)}"
