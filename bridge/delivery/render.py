"""Events → platform-neutral posts. Escaping is the adapters' job: everything here is plain.

Every word a post adds to what the customer or the gateway wrote is in the destination's
language (`words`, English unless given): see `bridge/language.py`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from bridge import phones
from bridge.chat.base import Moment, Post, Quote, Tone
from bridge.chat.limits import TELEGRAM_TOPIC_NAME
from bridge.config import Config
from bridge.jobs import NoticeJob
from bridge.language import ENGLISH, N_, Words
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
    problem_phrase,
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


def stamp(value: datetime, timezone: str = "", words: Words = ENGLISH) -> str:
    """`2026-01-01 09:14:00`: a gateway date as the gateway writes it (in English; in the
    language's form otherwise), on the account's wall clock."""
    return words.stamp(wall_clock(value, timezone))


def _channel_name(channel: str) -> str:
    return CHANNEL_NAMES.get(channel, channel)


def inbox_post(
    event: InboxMessage,
    config: Config,
    *,
    opens_thread: bool = True,
    posted_at: float | None = None,
    words: Words = ENGLISH,
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
        when = stamp(replied, zone, words) if replied is not None else words.gettext("date unknown")
        quote = Quote(text=event.isreply.orig_message_content, when=when)
    author = international(message.sender)
    body = message.content or words.gettext(EMPTY_MESSAGE)
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
            sent_at = stamp(message.date, zone, words)
            moment = Moment(at=at, text=f"{sent_at} ({zone})" if zone else sent_at)
    return Post(
        heading=author,
        context=(
            words.gettext("to {line}", line=line_label(message.receiver, config)),
            _channel_name(message.type),
        ),
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
    words: Words = ENGLISH,
) -> Post:
    """A conversation's waiting messages as one post, in the order given: the first as
    `inbox_post` shows it, each later one under its own short time line (`SMS · 09:14`)."""
    first, *later = events
    post = inbox_post(first, config, opens_thread=opens_thread, posted_at=posted_at, words=words)
    more = tuple(inbox_post(event, config, opens_thread=False, words=words) for event in later)
    return replace(post, more=more)


def read_post(report: ReadReport, words: Words = ENGLISH) -> Post:
    """`✓ Read by the customer at 09:06: "Your parcel 5531 will be…"` for the thread."""
    message = report.message
    at = message.read_datetime or message.datetime
    line = (
        words.gettext("✓ Read by the customer at {time}", time=clock(at, report.timezone))
        if at
        else words.gettext("✓ Read by the customer")
    )
    if message.content:
        line += f': "{snippet(message.content)}"'
    return Post(heading="", context=(line,), quiet=True)


PLATFORM_NAMES = {"slack": "Slack", "telegram": "Telegram", "console": "console"}


def answer_shown_post(
    author: str,
    destination: str,
    platform: str,
    text: str,
    status: str,
    words: Words = ENGLISH,
) -> Post:
    """An answer sent to the customer from another destination, for this thread's agents:
    `Answered by Anna P. in nl-team (Telegram)`, its status as small print, the text exactly
    as the customer was sent it."""
    where = f"{destination} ({PLATFORM_NAMES.get(platform, platform)})"
    return Post(
        heading=words.gettext("Answered by {author} in {where}", author=author, where=where),
        context=(
            status,
            words.gettext("sent to the customer, shown here so nobody answers twice"),
        ),
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


def detail_name(detail: int | None) -> str | None:
    """`INSUFFICIENT_FUNDS` for the gateway's named codes, else None."""
    meaning = DETAIL_CODES.get(detail) if detail is not None else None
    if meaning is None or ":" not in meaning:
        return None
    name = meaning.split(":", 1)[0]
    return name if name.isupper() else None


CREDIT = 2000  # INSUFFICIENT_FUNDS

# What went wrong, in the alert's title, for the codes that fail the whole account.
CAUSES: dict[int, str] = {
    2000: N_("Out of credit"),
    2004: N_("Gateway problems"),
    2005: N_("Sender name refused"),
    4003: N_("Account locked"),
    4004: N_("Messages blocked"),
    4005: N_("Sending job failed"),
}
# The next step for each detail code; every account-wide code has one.
NEXT_STEPS: dict[int, str] = {
    2000: N_("top up the Smstools credit; every message fails until you do"),
    2004: N_("contact Smstools support: their gateway reports problems"),
    2005: N_("check the sender name in Smstools (it must be allowed for the account)"),
    4003: N_("contact Smstools support: the account is locked"),
    4004: N_("contact Smstools support to learn why the messages are blocked"),
    4005: N_("contact Smstools support with the time of the failures"),
    10: N_("check the number with the customer"),
    2006: N_("check the number with the customer"),
    11: N_("nothing unless it lasts: the phone is off or out of range"),
    12: N_("nothing unless it lasts: the customer's phone has a problem"),
    13: N_("nothing unless it lasts: the operator's network has a problem"),
    14: N_("send it again if it still matters"),
    15: N_("reach the customer another way: the number is blacklisted"),
    16: N_("check the message's content"),
    4007: N_("check the message's content"),
    18: N_("reword the message: the operator took it for spam"),
    2001: N_("shorten the message"),
}
DEFAULT_STEP = N_("look the message up in Smstools")


def _code(code: str) -> tuple[int | None, int | None]:
    delivery, _, detail = code.partition("/")
    return (
        int(delivery) if delivery.isdigit() else None,
        int(detail) if detail.isdigit() else None,
    )


def _when(at: float, timezone: str, words: Words) -> str:
    """`2026-01-01 09:14 CET` (in the language's form): a moment on the account's clock."""
    return words.zoned(datetime.fromtimestamp(at, _zone(timezone)))


def _hour(at: float, timezone: str) -> str:
    """`09:14`: a moment's time of day on the account's clock."""
    return datetime.fromtimestamp(at, _zone(timezone)).strftime("%H:%M")


def labelled(code: int | None, detail: int | None, words: Words = ENGLISH) -> str:
    """`rejected, code 5, detail 2000 INSUFFICIENT_FUNDS`: never mistaken for a `(2/3)`. The
    gateway's status name is its own (lower case), not translated."""
    status = DELIVERY_CODES[code][0].lower() if code in DELIVERY_CODES else ""
    items = [status or words.gettext("failed")]
    if code is not None:
        items.append(words.gettext("code {code}", code=code))
    if detail is not None:
        name = detail_name(detail)
        items.append(
            words.gettext("detail {detail} {name}", detail=detail, name=name)
            if name
            else words.gettext("detail {detail}", detail=detail)
        )
    return ", ".join(items)


def _meaning(detail: int | None, words: Words) -> str:
    meaning = words.gettext(DETAIL_CODES[detail]) if detail in DETAIL_CODES else ""
    return meaning.split(": ", 1)[-1] if meaning else words.gettext("no reason given")


def _senders(group: Group, words: Words) -> str:
    """`Clinic`, `Clinic and +32 460 30 00 00`, `Clinic and 2 others`."""
    senders = group.senders or [group.sender]
    first = international(senders[0])
    if len(senders) == 1:
        return first
    if len(senders) == 2:
        return words.gettext("{first} and {second}", first=first, second=international(senders[1]))
    return words.ngettext(
        "{first} and {count} other", "{first} and {count} others", len(senders) - 1, first=first
    )


def _summary(group: Group, words: Words) -> tuple[str, str]:
    """(cause, what failed): `Out of credit`, `30 messages from Clinic not sent`."""
    ranked = sorted(group.codes.items(), key=lambda item: (-item[1], item[0]))
    details = [_code(code)[1] for code, _ in ranked]
    account_wide = [detail for detail in details if detail in ACCOUNT_WIDE_DETAILS]
    if account_wide:
        cause = words.gettext(CAUSES[account_wide[0]])
    elif group.cause is not None:
        cause = words.gettext(CAUSES[group.cause])
    elif len(details) == 1:
        cause = words.gettext("Not delivered")
    else:
        cause = words.gettext("Not delivered, several reasons")
    failed = words.ngettext(
        "{count} message from {senders} not sent",
        "{count} messages from {senders} not sent",
        group.count,
        senders=_senders(group, words),
    )
    return cause, failed


def _credit_context(group: Group, threshold: str | None, words: Words) -> tuple[str, ...]:
    if group.balance is None:
        return ()
    if threshold:
        return (
            words.gettext(
                "credit {balance}, below alerts.low_balance ({threshold})",
                balance=group.balance,
                threshold=threshold,
            ),
        )
    return (words.gettext("credit {balance}", balance=group.balance),)


def _out_of_credit_why(words: Words) -> str:
    return words.gettext(
        "Why: messages fail with INSUFFICIENT_FUNDS (delivery code 5, detail 2000) once it runs out"
    )


def _do(step: str, words: Words) -> str:
    return words.gettext("Do: {step}", step=words.gettext(step))


def _why_and_do(group: Group, words: Words) -> list[str]:
    """`Why:` per code (labelled), then `Do:` the next step for each; for a low credit with
    no failure yet, why messages will fail."""
    ranked = sorted(group.codes.items(), key=lambda item: (-item[1], item[0]))
    lines = []
    steps: list[str] = []
    if not ranked and group.cause == CREDIT:
        lines.append(_out_of_credit_why(words))
        steps.append(NEXT_STEPS[CREDIT])
    for code_text, count in ranked:
        code, detail = _code(code_text)
        many = f"{count} × " if len(ranked) > 1 else ""
        lines.append(
            words.gettext(
                "Why: {reason} ({code})",
                reason=many + _meaning(detail, words),
                code=labelled(code, detail, words),
            )
        )
        step = NEXT_STEPS.get(detail, DEFAULT_STEP) if detail is not None else DEFAULT_STEP
        if step not in steps:
            steps.append(step)
    lines.extend(_do(step, words) for step in steps)
    return lines


def _heading(group: Group, words: Words) -> str:
    if group.count == 0 and group.balance is not None:
        return words.gettext("Smstools credit is low: {balance}", balance=group.balance)
    cause, failed = _summary(group, words)
    return words.gettext("{cause}: {failed}", cause=cause, failed=failed)


def alert_post(
    group: Group,
    mention: str | None,
    *,
    firing: bool = True,
    threshold: str | None = None,
    quiet: bool = False,
    words: Words = ENGLISH,
) -> Post:
    """A title in plain words (red when `firing`), then `Why:` (each code, labelled), `Do:`
    (the next step for each), the receivers one per line (the first ten, then how many
    more), first and last time; the low credit read, if any; `quiet`: since when nothing
    new failed. `mention` pages someone: the caller decides whether this group deserves
    it."""
    lines = _why_and_do(group, words)
    if group.receivers:
        lines.append(words.gettext("Receivers:"))
        lines.extend(international(receiver) for receiver in group.receivers)
    if group.others:
        lines.append(words.gettext("and {count} more", count=group.others))
    context = [*_times(group, words), *_credit_context(group, threshold, words)]
    if quiet:
        since = _hour(group.last_at, group.timezone)
        context.append(words.gettext("no new failures since {time}", time=since))
    return Post(
        heading=_heading(group, words),
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


def _undone(group: Group, texts: Sequence[tuple[str, str]], words: Words) -> list[str]:
    """How many messages were never sent, by reference with the first words of each text,
    and to send them again."""
    lines = [_never_sent(group, words)]
    for reference, count in sorted(group.unsent.items(), key=lambda item: (-item[1], item[0])):
        named = (
            words.gettext("reference {reference}", reference=reference)
            if reference
            else words.gettext("no reference")
        )
        lines.append(f"• {count} × {named}")
        lines.extend(
            f"    “{first_words(text)}”" for ref, text in texts if ref == reference and text
        )
    lines.append(_send_again(group, words))
    return lines


def _never_sent(group: Group, words: Words) -> str:
    return words.ngettext(
        "Still undone: {count} message was never sent",
        "Still undone: {count} messages were never sent",
        group.count,
    )


def _send_again(group: Group, words: Words) -> str:
    """The one next step once an incident is over."""
    if group.cause == CREDIT:
        return words.gettext("Send these again now that credit is back.")
    return words.gettext("Send these again now that it is fixed.")


def _gone(group: Group, threshold: str | None, words: Words) -> tuple[str, str]:
    """What is over, as a context item and as a heading: `credit is back above 100`,
    `Smstools credit is back above 100`."""
    if group.cause == CREDIT and threshold:
        return (
            words.gettext("credit is back above {threshold}", threshold=threshold),
            words.gettext("Smstools credit is back above {threshold}", threshold=threshold),
        )
    if group.cause == CREDIT:
        return words.gettext("credit is back"), words.gettext("Smstools credit is back")
    return (
        words.gettext("messages are delivered again"),
        words.gettext("Smstools messages are delivered again"),
    )


def resolved_post(
    group: Group,
    texts: Sequence[tuple[str, str]],
    mention: str | None = None,
    *,
    threshold: str | None = None,
    words: Words = ENGLISH,
) -> Post:
    """An incident whose cause is gone, in green: its title, Why and Do kept, then what is
    still undone: how many messages were never sent, by the gateway's `reference`, with the
    first words of each distinct text (`texts`: (reference, text) pairs), and to send them
    again. `mention` tells whoever was paged (a reply to the alert)."""
    lines = _why_and_do(group, words)
    if group.count:
        lines.extend(_undone(group, texts, words))
    else:
        lines.append(words.gettext("No message failed meanwhile."))
    gone, gone_heading = _gone(group, threshold, words)
    when = _hour(group.cleared_at or group.last_at, group.timezone)
    heading = gone_heading if group.count == 0 else _heading(group, words)
    return Post(
        heading=words.gettext("Resolved: {heading}", heading=heading),
        context=(
            *_times(group, words),
            words.gettext("resolved {time}: {what}", time=when, what=gone),
        ),
        body="\n".join(lines),
        mention=mention,
        tone=Tone.RESOLVED,
    )


def resolution_reply(
    group: Group, mention: str | None, *, threshold: str | None = None, words: Words = ENGLISH
) -> Post:
    """The resolution as a reply under the alert, for whoever was paged: what is over and
    when, how many messages were never sent and the one next step. The alert just above
    it, edited (`resolved_post`), holds Why, Do and the list by reference."""
    gone, _ = _gone(group, threshold, words)
    when = _hour(group.cleared_at or group.last_at, group.timezone)
    if group.count:
        body = f"{_never_sent(group, words)}\n{_send_again(group, words)}"
    else:
        body = words.gettext("No message failed meanwhile.")
    return Post(
        heading=words.gettext("Resolved {time}: {what}", time=when, what=gone),
        body=body,
        mention=mention,
        tone=Tone.RESOLVED,
    )


def _times(group: Group, words: Words) -> tuple[str, str]:
    return (
        words.gettext("first {time}", time=_when(group.first_at, group.timezone, words)),
        words.gettext("last {time}", time=_when(group.last_at, group.timezone, words)),
    )


def destination_failure_post(
    destination: str, reason: str, detail: str, mention: str | None, words: Words = ENGLISH
) -> Post:
    """On-call learns once that a destination cannot take posts, and what to do about it.
    `reason` and `detail` are the platform's error as the logs name it: not translated."""
    return Post(
        heading=words.gettext(
            "Posting to {destination} fails: {reason}", destination=destination, reason=reason
        ),
        context=(words.gettext("messages for it are kept as dead letters"),),
        body=words.gettext(
            "{detail}\n\nOnce fixed, send them with: smsbridge dead-letters retry --all "
            "(see the list with: smsbridge dead-letters list)",
            detail=detail,
        ),
        mention=mention,
    )


def credit_post(
    low: bool, balance: str, threshold: str, mention: str | None, words: Words = ENGLISH
) -> Post:
    """On-call learns the Smstools credit runs out before messages start bouncing (red, with
    the next step), and, in green, that it is back up."""
    if not low:
        return Post(
            heading=words.gettext("Smstools credit is back above {threshold}", threshold=threshold),
            context=(words.gettext("balance {balance}", balance=balance),),
            body=words.gettext("Resolved: messages can be sent again."),
            tone=Tone.RESOLVED,
        )
    return Post(
        heading=words.gettext("Smstools credit is low: {balance}", balance=balance),
        context=(words.gettext("below alerts.low_balance ({threshold})", threshold=threshold),),
        body=f"{_out_of_credit_why(words)}\n{_do(NEXT_STEPS[CREDIT], words)}",
        mention=mention,
        tone=Tone.FIRING,
    )


def failure_note_post(report: DeliveryReport, words: Words = ENGLISH) -> Post:
    """A short note in the customer's thread: our message did not reach them, and why;
    its times labelled (`from Acme · sent 09:38 · failed 09:40`)."""
    message, zone = report.message, report.timezone
    context = [words.gettext("from {sender}", sender=international(message.sender))]
    if message.datetime:
        context.append(words.gettext("sent {time}", time=clock(message.datetime, zone)))
    if message.delivery_status_datetime:
        failed_at = clock(message.delivery_status_datetime, zone)
        context.append(words.gettext("failed {time}", time=failed_at))
    sent = stamp(message.datetime, zone, words) if message.datetime else ""
    return Post(
        heading=words.gettext(
            "Not delivered to {receiver}", receiver=international(message.receiver)
        ),
        context=tuple(context),
        body=describe_delivery(message.delivery_code, message.delivery_code_detail, words),
        quote=Quote(text=message.content, when=sent) if message.content else None,
        quiet=True,
    )


def thread_closed_post(words: Words = ENGLISH) -> Post:
    """The first words of a thread opened because the conversation's was closed."""
    return Post(
        heading=words.gettext("This conversation continues here"),
        context=(words.gettext("its previous topic is closed and the bot may not reopen it"),),
        body=words.gettext("To let the bot reopen closed topics, give it the Manage topics right."),
        quiet=True,
    )


def _next_step_not_understood(problem: str, words: Words) -> str:
    if problem.startswith("webhook_type ") and problem.endswith(" unknown"):
        return words.gettext(
            "This bridge does not handle this webhook type: they are stored and counted. If "
            "you do not need them, switch this webhook off in the Smstools dashboard; a newer "
            "smsbridge that handles them can replay them with smsbridge reprocess."
        )
    return words.gettext(
        "They are stored as they came, not posted. Once a fixed or newer smsbridge reads "
        "them, replay them in order with: smsbridge reprocess --since <date> (see what it "
        "would do first with --dry-run)."
    )


def not_understood_post(
    webhook_type: str,
    problem: str,
    count: int,
    window: float,
    mention: str | None,
    words: Words = ENGLISH,
) -> Post:
    """On-call learns once per interval that gateway events of one kind were stored but not
    understood, why, and how to bring them back: never their content or numbers. `problem`
    names a field of the gateway's payload: not translated."""
    kind = webhook_type or words.gettext("without a webhook_type")
    hours = (
        words.gettext("{hours} h", hours=f"{window / 3600:g}")
        if window >= 3600
        else words.gettext("{minutes} min", minutes=f"{window / 60:g}")
    )
    return Post(
        heading=words.gettext("Smstools events not understood: {kind}", kind=kind),
        context=(
            words.gettext("{count} in the last {window}", count=count, window=hours),
            words.gettext("reason: {problem}", problem=words.say(problem_phrase(problem))),
        ),
        body=_next_step_not_understood(problem, words),
        mention=mention,
        tone=Tone.FIRING,
    )


def chat_moved_post(notice: NoticeJob, mention: str | None, words: Words = ENGLISH) -> Post:
    """On-call learns once that a Telegram group became a supergroup and the bridge followed,
    and the config key to change (a notice planned before its chat ids were kept says the
    adapter's own account instead)."""
    destination = notice.failing
    body = f"{notice.detail}."
    if notice.old_chat and notice.new_chat:
        body = words.gettext(
            "telegram destination '{destination}' (chat {old}): the group became the "
            "supergroup {new}; posting there from now on. Set chat_id to {new} in the config.",
            destination=destination,
            old=notice.old_chat,
            new=notice.new_chat,
        )
    return Post(
        heading=words.gettext(
            "{destination}: the Telegram group became a supergroup", destination=destination
        ),
        context=(words.gettext("nothing was lost: posts go to the new chat"),),
        body=body,
        mention=mention,
    )
