"""Events → platform-neutral posts. Escaping is the adapters' job: everything here is plain."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from bridge import phones
from bridge.chat.base import Post, Quote
from bridge.config import Config
from bridge.phones import international
from bridge.smstools import DETAIL_CODES, DeliveryReport, InboxMessage, describe_delivery
from bridge.store.alerts import Group

CHANNEL_NAMES = {"sms": "SMS", "whatsapp": "WhatsApp"}


def line_label(receiver: str, config: Config) -> str:
    """`Support line (+32 460 20 00 00)` when the config names the line, else the number."""
    number = international(receiver)
    name = config.lines.get(phones.key(receiver))
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


def detail_name(detail: int | None) -> str:
    """`INSUFFICIENT_FUNDS` for the gateway's named codes, else the plain-English meaning."""
    if detail is None:
        return "no detail code"
    meaning = DETAIL_CODES.get(detail)
    if meaning is None:
        return f"detail code {detail}"
    name = meaning.split(":", 1)[0]
    return name if ":" in meaning and name.isupper() else meaning


def _code(code: str) -> tuple[int | None, int | None]:
    delivery, _, detail = code.partition("/")
    return (
        int(delivery) if delivery.isdigit() else None,
        int(detail) if detail.isdigit() else None,
    )


def _when(at: float, timezone: str) -> str:
    try:
        zone = ZoneInfo(timezone or "Europe/Brussels")
    except (ZoneInfoNotFoundError, ValueError):
        zone = ZoneInfo("Europe/Brussels")
    return datetime.fromtimestamp(at, zone).strftime("%Y-%m-%d %H:%M:%S %Z")


def alert_post(group: Group, mention: str | None) -> Post:
    """How many messages failed, why (every code in plain English), from which sender, to
    whom (the first ten receivers, then how many more), first and last time."""
    ranked = sorted(group.codes.items(), key=lambda item: (-item[1], item[0]))
    reasons = [_code(code) for code, _ in ranked]
    why = detail_name(reasons[0][1]) if len(reasons) == 1 else "several reasons"
    plural = "message" if group.count == 1 else "messages"
    lines = []
    for (code, detail), (_, count) in zip(reasons, ranked, strict=True):
        numbers = "/".join(str(n) for n in (code, detail) if n is not None)
        lines.append(f"{count} × {describe_delivery(code, detail)} ({numbers})")
    receivers = ", ".join(international(receiver) for receiver in group.receivers)
    if group.others:
        receivers += f" and {group.others} more"
    lines.append(f"Receivers: {receivers}")
    return Post(
        heading=f"{group.count} {plural} not delivered: {why}",
        context=(
            f"sender {international(group.sender)}",
            f"first {_when(group.first_at, group.timezone)}",
            f"last {_when(group.last_at, group.timezone)}",
        ),
        body="\n".join(lines),
        mention=mention,
    )


def destination_failure_post(
    destination: str, reason: str, detail: str, mention: str | None
) -> Post:
    """On-call learns once that a destination cannot take posts, and what to do about it."""
    return Post(
        heading=f"Posting to {destination} fails: {reason}",
        context=("messages for it are kept as dead letters",),
        body=(
            f"{detail}\n\nOnce fixed, send them with: smsbridge dead-letters retry --all "
            "(see the list with: smsbridge dead-letters list)"
        ),
        mention=mention,
    )


def credit_post(low: bool, balance: str, threshold: str, mention: str | None) -> Post:
    """On-call learns the Smstools credit runs out before messages start bouncing."""
    if not low:
        return Post(
            heading=f"Smstools credit is back above {threshold}",
            context=(f"balance {balance}",),
            body="Resolved: messages can be sent again.",
            mention=None,
        )
    return Post(
        heading=f"Smstools credit is low: {balance}",
        context=(f"below alerts.low_balance ({threshold})",),
        body=(
            "Top up the Smstools account before messages fail with INSUFFICIENT FUNDS "
            "(delivery code 5, detail 2000)."
        ),
        mention=mention,
    )


def failure_note_post(report: DeliveryReport) -> Post:
    """A short note in the customer's thread: our message did not reach them, and why."""
    message = report.message
    when = message.delivery_status_datetime or message.datetime or "time unknown"
    return Post(
        heading=f"Not delivered to {international(message.receiver)}",
        context=(f"from {international(message.sender)}", when),
        body=describe_delivery(message.delivery_code, message.delivery_code_detail),
        quote=Quote(text=message.content, when=message.datetime) if message.content else None,
    )
