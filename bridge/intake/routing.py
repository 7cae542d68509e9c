"""Which destinations an inbox message goes to."""

from __future__ import annotations

from bridge import phones
from bridge.config import Config
from bridge.smstools.webhooks import InboxMessage


def destinations_for(event: InboxMessage, config: Config) -> tuple[str, ...]:
    """First matching route wins; unmatched messages go to `default` (possibly nowhere)."""
    receiver = phones.key(event.message.receiver)
    for route in config.routes:
        if route.matches(receiver, event.message.type):
            return route.to
    return config.default
