"""Events → platform-neutral posts. Escaping is the adapters' job: everything here is plain."""

from __future__ import annotations

from bridge.chat.base import Post, Quote
from bridge.config import Config
from bridge.phones import international
from bridge.routing import number_key
from bridge.smstools import InboxMessage

CHANNEL_NAMES = {"sms": "SMS", "whatsapp": "WhatsApp"}


def line_label(receiver: str, config: Config) -> str:
    """`Support line (+32 460 20 00 00)` when the config names the line, else the number."""
    number = international(receiver)
    name = config.lines.get(number_key(receiver))
    return f"{name} ({number})" if name else number


def thread_title(event: InboxMessage) -> str:
    """A conversation's thread is named after the customer (Telegram topic names)."""
    return international(event.message.sender)


def inbox_post(event: InboxMessage, config: Config) -> Post:
    """Who wrote, on which line, over SMS or WhatsApp, when, what, and what it answers."""
    message = event.message
    sent_at = message.date or "time unknown"
    if event.timezone and message.date:
        sent_at = f"{message.date} ({event.timezone})"
    quote = None
    if event.isreply is not None and event.isreply.orig_message_content:
        when = event.isreply.orig_messagedate or "date unknown"
        quote = Quote(text=event.isreply.orig_message_content, when=when)
    return Post(
        heading=international(message.sender),
        context=(
            f"to {line_label(message.receiver, config)}",
            CHANNEL_NAMES[message.type],
            sent_at,
        ),
        body=message.content,
        quote=quote,
    )
