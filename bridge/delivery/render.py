"""Events → platform-neutral posts. Escaping is the adapters' job: everything here is plain."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from bridge import phones
from bridge.chat.base import Moment, Post, Quote, Tone
from bridge.chat.limits import TELEGRAM_TOPIC_NAME
from bridge.config import Config
from bridge.phones import international
from bridge.smstools.webhooks import (
    ACCOUNT_WIDE_DETAILS,
    DELIVERY_CODES,
    DETAIL_CODES,
    EMPTY_MESSAGE,
    DeliveryReport,
    InboxMessage,
    ReadReport,
    describe_delivery,
)
from bridge.store.alerts import Group

CHANNEL_NAMES = {"sms": "SMS", "whatsapp": "WhatsApp"}
DEFAULT_ZONE = "Europe/Brussels"  # Smstools' own, for accounts whose events name none
CLOCK_SLACK = 60.0  # seconds the gateway's time may differ from the post's and go unsaid


def line_label(receiver: str, config: Config) -> str:
    """`Support line (+32 460 20 00 00)` when the config names the line, else the number."""
    number = international(receiver)
    name = config.lines.get(phones.key(receiver))
    return f"{name} ({number})" if name else number


def thread_title(sender: str, receiver: str, channel: str | None, config: Config) -> str:
    """`+32 470 12 34 56 · Support line · SMS`: who, on which line, over what (topic names;
    `channel` None when not known). Within 128 characters: the line's name gives way first,
    the customer's number never."""
    who = international(sender)
    line = config.lines.get(phones.key(receiver)) or international(receiver)
    how = f" · {CHANNEL_NAMES.get(channel, channel)}" if channel else ""
    room = TELEGRAM_TOPIC_NAME - len(f"{who} · {how}")
    if room < len(line):
        line = line[: max(room - 1, 0)].rstrip() + "…"
    return f"{who} · {line}{how}"[:TELEGRAM_TOPIC_NAME]


def _zone(timezone: str) -> ZoneInfo:
    try:
        return ZoneInfo(timezone or DEFAULT_ZONE)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo(DEFAULT_ZONE)


def wall_clock(value: datetime, timezone: str) -> datetime:
    """A gateway date on the account's wall clock: a naive date is one already; an aware
    one (ISO 8601 with an offset, Unix seconds) is moved to the event's `timezone` (Smstools'
    own when it names none or an unknown one)."""
    return value if value.tzinfo is None else value.astimezone(_zone(timezone))


def clock(value: datetime, timezone: str = "") -> str:
    """`09:14`: the time of day of a gateway date, on the account's wall clock."""
    return wall_clock(value, timezone).strftime("%H:%M")


def stamp(value: datetime, timezone: str = "") -> str:
    """`2026-01-01 09:14:00`: a gateway date as the gateway writes it, on the account's wall
    clock."""
    return wall_clock(value, timezone).strftime("%Y-%m-%d %H:%M:%S")


def _channel_name(channel: str) -> str:
    return CHANNEL_NAMES.get(channel, channel)


def inbox_post(
    event: InboxMessage,
    config: Config,
    *,
    opens_thread: bool = True,
    posted_at: float | None = None,
) -> Post:
    """What the customer wrote and what it answers. The post that opens a thread says who
    wrote, on which line, over SMS or WhatsApp (`titled`: the thread's title says the same),
    and when, only if the gateway's time differs from `posted_at` (Unix seconds; None: always)
    by more than a minute; later posts only `SMS · 09:14` (the line is the thread's own, so
    it never changes within one)."""
    message, zone = event.message, event.timezone
    quote = None
    if event.isreply is not None and event.isreply.orig_message_content:
        replied = event.isreply.orig_messagedate
        when = stamp(replied, zone) if replied is not None else "date unknown"
        quote = Quote(text=event.isreply.orig_message_content, when=when)
    author = international(message.sender)
    body = message.content or EMPTY_MESSAGE
    if not opens_thread:
        short = (_channel_name(message.type), clock(message.date, zone) if message.date else "")
        return Post(
            heading="",
            context=(" · ".join(item for item in short if item),),
            body=body,
            quote=quote,
            author=author,
        )
    moment = None
    if message.date:
        at = _instant(message.date, zone)
        if posted_at is None or abs(posted_at - at) > CLOCK_SLACK:
            sent_at = stamp(message.date, zone)
            moment = Moment(at=at, text=f"{sent_at} ({zone})" if zone else sent_at)
    return Post(
        heading=author,
        context=(f"to {line_label(message.receiver, config)}", _channel_name(message.type)),
        body=body,
        quote=quote,
        author=author,
        moment=moment,
        titled=True,
    )


def _instant(value: datetime, timezone: str) -> float:
    """A gateway date as Unix seconds: a naive one is on the account's wall clock."""
    aware = value if value.tzinfo is not None else value.replace(tzinfo=_zone(timezone))
    return aware.timestamp()


def combined_post(
    events: Sequence[InboxMessage],
    config: Config,
    *,
    opens_thread: bool = True,
    posted_at: float | None = None,
) -> Post:
    """A conversation's waiting messages as one post, in the order given: the first as
    `inbox_post` shows it, each later one under its own short time line (`SMS · 09:14`)."""
    first, *later = events
    post = inbox_post(first, config, opens_thread=opens_thread, posted_at=posted_at)
    more = tuple(inbox_post(event, config, opens_thread=False) for event in later)
    return replace(post, more=more)


def read_post(report: ReadReport) -> Post:
    """`✓ Read by the customer at 09:06: "Your parcel 5531 will be…"` for the thread."""
    message = report.message
    at = message.read_datetime or message.datetime
    line = (
        f"✓ Read by the customer at {clock(at, report.timezone)}"
        if at
        else "✓ Read by the customer"
    )
    if message.content:
        line += f': "{snippet(message.content)}"'
    return Post(heading="", context=(line,), quiet=True)


PLATFORM_NAMES = {"slack": "Slack", "telegram": "Telegram", "console": "console"}


def answer_shown_post(author: str, destination: str, platform: str, text: str, status: str) -> Post:
    """An answer sent to the customer from another destination, for this thread's agents:
    `Answered by Anna P. in nl-team (Telegram)`, its status as small print, the text exactly
    as the customer was sent it."""
    where = f"{destination} ({PLATFORM_NAMES.get(platform, platform)})"
    return Post(
        heading=f"Answered by {author} in {where}",
        context=(status, "sent to the customer, shown here so nobody answers twice"),
        body=text,
        quiet=True,
    )


def snippet(text: str, length: int = 24) -> str:
    """The first words of `text`, about `length` characters, `…` when there is more."""
    flat = " ".join(text.split())
    if len(flat) <= length:
        return flat
    cut = flat.rfind(" ", 0, length + 1)
    return flat[: cut if cut > length // 2 else length].rstrip() + "…"


def detail_name(detail: int | None) -> str:
    """`INSUFFICIENT_FUNDS` for the gateway's named codes, else the plain-English meaning."""
    if detail is None:
        return "no detail code"
    meaning = DETAIL_CODES.get(detail)
    if meaning is None:
        return f"detail code {detail}"
    name = meaning.split(":", 1)[0]
    return name if ":" in meaning and name.isupper() else meaning


CREDIT = 2000  # INSUFFICIENT_FUNDS

# What went wrong, in the alert's title, for the codes that fail the whole account.
CAUSES: dict[int, str] = {
    2000: "Out of credit",
    2004: "Gateway problems",
    2005: "Sender name refused",
    4003: "Account locked",
    4004: "Messages blocked",
    4005: "Sending job failed",
}
# The next step for each detail code; every account-wide code has one.
NEXT_STEPS: dict[int, str] = {
    2000: "top up the Smstools credit; every message fails until you do",
    2004: "contact Smstools support: their gateway reports problems",
    2005: "check the sender name in Smstools (it must be allowed for the account)",
    4003: "contact Smstools support: the account is locked",
    4004: "contact Smstools support to learn why the messages are blocked",
    4005: "contact Smstools support with the time of the failures",
    10: "check the number with the customer",
    2006: "check the number with the customer",
    11: "nothing unless it lasts: the phone is off or out of range",
    12: "nothing unless it lasts: the customer's phone has a problem",
    13: "nothing unless it lasts: the operator's network has a problem",
    14: "send it again if it still matters",
    15: "reach the customer another way: the number is blacklisted",
    16: "check the message's content",
    4007: "check the message's content",
    18: "reword the message: the operator took it for spam",
    2001: "shorten the message",
}
DEFAULT_STEP = "look the message up in Smstools"


def _code(code: str) -> tuple[int | None, int | None]:
    delivery, _, detail = code.partition("/")
    return (
        int(delivery) if delivery.isdigit() else None,
        int(detail) if detail.isdigit() else None,
    )


def _when(at: float, timezone: str, pattern: str = "%Y-%m-%d %H:%M %Z") -> str:
    return datetime.fromtimestamp(at, _zone(timezone)).strftime(pattern)


def labelled(code: int | None, detail: int | None) -> str:
    """`rejected, code 5, detail 2000 INSUFFICIENT_FUNDS`: never mistaken for a `(2/3)`."""
    status = DELIVERY_CODES.get(code, ("failed", True, True))[0] if code is not None else ""
    words = [status.lower() or "failed"]
    if code is not None:
        words.append(f"code {code}")
    if detail is not None:
        name = detail_name(detail)
        words.append(f"detail {detail} {name}" if name.isupper() else f"detail {detail}")
    return ", ".join(words)


def _meaning(detail: int | None) -> str:
    meaning = DETAIL_CODES.get(detail, "") if detail is not None else ""
    return meaning.split(": ", 1)[-1] if meaning else "no reason given"


def _senders(group: Group) -> str:
    """`Clinic`, `Clinic and +32 460 30 00 00`, `Clinic and 2 others`."""
    senders = group.senders or [group.sender]
    first = international(senders[0])
    if len(senders) == 1:
        return first
    if len(senders) == 2:
        return f"{first} and {international(senders[1])}"
    return f"{first} and {len(senders) - 1} others"


def _summary(group: Group) -> tuple[str, str]:
    """(cause, what failed): `Out of credit`, `30 messages from Clinic not sent`."""
    ranked = sorted(group.codes.items(), key=lambda item: (-item[1], item[0]))
    details = [_code(code)[1] for code, _ in ranked]
    account_wide = [detail for detail in details if detail in ACCOUNT_WIDE_DETAILS]
    if account_wide:
        cause = CAUSES[account_wide[0]]
    elif group.cause is not None:
        cause = CAUSES[group.cause]
    elif len(details) == 1:
        cause = "Not delivered"
    else:
        cause = "Not delivered, several reasons"
    plural = "message" if group.count == 1 else "messages"
    return cause, f"{group.count} {plural} from {_senders(group)} not sent"


def _credit_context(group: Group, threshold: str | None) -> tuple[str, ...]:
    if group.balance is None:
        return ()
    below = f", below alerts.low_balance ({threshold})" if threshold else ""
    return (f"credit {group.balance}{below}",)


def _why_and_do(group: Group) -> list[str]:
    """`Why:` per code (labelled), then `Do:` the next step for each; for a low credit with
    no failure yet, why messages will fail."""
    ranked = sorted(group.codes.items(), key=lambda item: (-item[1], item[0]))
    lines = []
    steps: list[str] = []
    if not ranked and group.cause == CREDIT:
        lines.append(
            "Why: messages fail with INSUFFICIENT_FUNDS (delivery code 5, detail 2000) once it "
            "runs out"
        )
        steps.append(NEXT_STEPS[CREDIT])
    for code_text, count in ranked:
        code, detail = _code(code_text)
        many = f"{count} × " if len(ranked) > 1 else ""
        lines.append(f"Why: {many}{_meaning(detail)} ({labelled(code, detail)})")
        step = NEXT_STEPS.get(detail, DEFAULT_STEP) if detail is not None else DEFAULT_STEP
        if step not in steps:
            steps.append(step)
    lines.extend(f"Do: {step}" for step in steps)
    return lines


def _heading(group: Group) -> str:
    if group.count == 0 and group.balance is not None:
        return f"Smstools credit is low: {group.balance}"
    cause, failed = _summary(group)
    return f"{cause}: {failed}"


def alert_post(
    group: Group,
    mention: str | None,
    *,
    firing: bool = True,
    threshold: str | None = None,
    quiet: bool = False,
) -> Post:
    """A title in plain words (red when `firing`), then `Why:` (each code, labelled), `Do:`
    (the next step for each), the receivers one per line (the first ten, then how many
    more), first and last time; the low credit read, if any; `quiet`: since when nothing
    new failed. `mention` pages someone: the caller decides whether this group deserves
    it."""
    lines = _why_and_do(group)
    if group.receivers:
        lines.append("Receivers:")
        lines.extend(international(receiver) for receiver in group.receivers)
    if group.others:
        lines.append(f"and {group.others} more")
    context = [*_times(group), *_credit_context(group, threshold)]
    if quiet:
        context.append(f"no new failures since {_when(group.last_at, group.timezone, '%H:%M')}")
    return Post(
        heading=_heading(group),
        context=tuple(context),
        body="\n".join(lines),
        mention=mention,
        tone=Tone.FIRING if firing else Tone.PLAIN,
        quiet=not firing,
    )


def first_words(text: str, words: int = 8) -> str:
    """The first `words` words of a message, on one line, `…` when there is more."""
    split = text.split()
    shown = " ".join(split[:words])
    return f"{shown}…" if len(split) > words else shown


def resolved_post(
    group: Group,
    texts: Sequence[tuple[str, str]],
    mention: str | None = None,
    *,
    threshold: str | None = None,
) -> Post:
    """An incident whose cause is gone, in green: its title, Why and Do kept, then what is
    still undone: how many messages were never sent, by the gateway's `reference`, with the
    first words of each distinct text (`texts`: (reference, text) pairs), and to send them
    again. `mention` tells whoever was paged (a reply to the alert)."""
    lines = _why_and_do(group)
    if group.count:
        plural = "message was" if group.count == 1 else "messages were"
        lines.append(f"Still undone: {group.count} {plural} never sent")
        for reference, count in sorted(group.unsent.items(), key=lambda item: (-item[1], item[0])):
            named = f"reference {reference}" if reference else "no reference"
            lines.append(f"• {count} × {named}")
            lines.extend(
                f"    “{first_words(text)}”" for ref, text in texts if ref == reference and text
            )
        again = "now that credit is back" if group.cause == CREDIT else "now that it is fixed"
        lines.append(f"Send these again {again}.")
    else:
        lines.append("No message failed meanwhile.")
    gone = (
        f"credit is back above {threshold}"
        if group.cause == CREDIT and threshold
        else "credit is back"
        if group.cause == CREDIT
        else "messages are delivered again"
    )
    when = _when(group.cleared_at or group.last_at, group.timezone, "%H:%M")
    heading = f"Smstools {gone}" if group.count == 0 else _heading(group)
    return Post(
        heading=f"Resolved: {heading}",
        context=(*_times(group), f"resolved {when}: {gone}"),
        body="\n".join(lines),
        mention=mention,
        tone=Tone.RESOLVED,
    )


def _times(group: Group) -> tuple[str, str]:
    return (
        f"first {_when(group.first_at, group.timezone)}",
        f"last {_when(group.last_at, group.timezone)}",
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
    """On-call learns the Smstools credit runs out before messages start bouncing (red, with
    the next step), and, in green, that it is back up."""
    if not low:
        return Post(
            heading=f"Smstools credit is back above {threshold}",
            context=(f"balance {balance}",),
            body="Resolved: messages can be sent again.",
            tone=Tone.RESOLVED,
        )
    return Post(
        heading=f"Smstools credit is low: {balance}",
        context=(f"below alerts.low_balance ({threshold})",),
        body=(
            "Why: messages fail with INSUFFICIENT_FUNDS (delivery code 5, detail 2000) once it "
            f"runs out\nDo: {NEXT_STEPS[2000]}"
        ),
        mention=mention,
        tone=Tone.FIRING,
    )


def failure_note_post(report: DeliveryReport) -> Post:
    """A short note in the customer's thread: our message did not reach them, and why;
    its times labelled (`from Acme · sent 09:38 · failed 09:40`)."""
    message, zone = report.message, report.timezone
    context = [f"from {international(message.sender)}"]
    if message.datetime:
        context.append(f"sent {clock(message.datetime, zone)}")
    if message.delivery_status_datetime:
        context.append(f"failed {clock(message.delivery_status_datetime, zone)}")
    sent = stamp(message.datetime, zone) if message.datetime else ""
    return Post(
        heading=f"Not delivered to {international(message.receiver)}",
        context=tuple(context),
        body=describe_delivery(message.delivery_code, message.delivery_code_detail),
        quote=Quote(text=message.content, when=sent) if message.content else None,
        quiet=True,
    )


def thread_closed_post() -> Post:
    """The first words of a thread opened because the conversation's was closed."""
    return Post(
        heading="This conversation continues here",
        context=("its previous topic is closed and the bot may not reopen it",),
        body="To let the bot reopen closed topics, give it the Manage topics right.",
        quiet=True,
    )


def not_understood_post(
    webhook_type: str, problem: str, count: int, window: float, mention: str | None
) -> Post:
    """On-call learns once per interval that gateway events of one kind were stored but not
    understood, why, and how to bring them back: never their content or numbers."""
    kind = webhook_type or "without a webhook_type"
    hours = f"{window / 3600:g} h" if window >= 3600 else f"{window / 60:g} min"
    unknown = problem.startswith("webhook_type ") and problem.endswith(" unknown")
    if unknown:
        step = (
            "This bridge does not handle this webhook type: they are stored and counted. If "
            "you do not need them, switch this webhook off in the Smstools dashboard; a newer "
            "smsbridge that handles them can replay them with smsbridge reprocess."
        )
    else:
        step = (
            "They are stored as they came, not posted. Once a fixed or newer smsbridge reads "
            "them, replay them in order with: smsbridge reprocess --since <date> (see what it "
            "would do first with --dry-run)."
        )
    return Post(
        heading=f"Smstools events not understood: {kind}",
        context=(f"{count} in the last {hours}", f"reason: {problem}"),
        body=step,
        mention=mention,
        tone=Tone.FIRING,
    )


def chat_moved_post(destination: str, detail: str, mention: str | None) -> Post:
    """On-call learns once that a Telegram group became a supergroup and the bridge followed."""
    return Post(
        heading=f"{destination}: the Telegram group became a supergroup",
        context=("nothing was lost: posts go to the new chat",),
        body=f"{detail}.",
        mention=mention,
    )
