"""Smstools webhooks: payload models and the gateway's code tables.

Models read each field leniently (the rule for each field is in docs/gateway-fields.md) and
keep every other field (`extra="allow"`): the raw event is stored anyway, and newer payloads
add fields we do not know yet. One odd optional field never sinks an event; only what makes
it meaningless (no `webhook_id`, an inbox message without sender or receiver, a report
without message id) leaves it not understood, with the reason.
"""

from __future__ import annotations

import string
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
    StringConstraints,
    ValidationError,
)

from bridge.language import ENGLISH, N_, Phrase, Words

WEBHOOK_TYPES = ("inbox_message", "delivery_report", "read_report")

# Bounds on what is stored in indexed columns or shown in headings. A phone number has at most
# 15 digits and a sender name 11 characters; ids and dates are short. (PostgreSQL refuses
# index entries over ~2.7 kB: an unbounded sender would make a body unstorable forever.)
NUMBER = 64
IDENT = 200
DATE = 64
# Codes are small numbers; one beyond a 32-bit integer is not a code (no column would take it).
CODE_MAX = 2_147_483_647
EMPTY_MESSAGE = N_("(empty message)")  # how a message without content is shown


def _object_or_none(value: Any) -> Any:
    """`isreply` is an object when the message answers one; `false`, `[]`, `""`, null: not."""
    return value if isinstance(value, dict) else None


def _not_bool(value: Any) -> Any:
    return None if isinstance(value, bool) else value


def _empty(_value: Any) -> str:
    return ""


def _none(_value: Any) -> None:
    return None


def _sms(_value: Any) -> str:
    return "sms"


def _true(_value: Any) -> bool:
    return True


# The hot path parses every event with these types, built once here and shared by every field
# of a kind. Pydantic checks them without calling Python (numbers become text through the
# models' `coerce_numbers_to_str`); a value that fails its type falls through, left to right,
# to the last member of its union, which makes it absent: only odd values cost a Python call.
_LENIENT = Field(union_mode="left_to_right")
_NONE = Annotated[None, PlainValidator(_none)]

# Optional text: text or a number; null, anything else or text over the bound is absent ("").
Text = Annotated[str | Annotated[str, PlainValidator(_empty)], _LENIENT]
Number = Annotated[
    Annotated[str, Field(max_length=NUMBER)] | Annotated[str, PlainValidator(_empty)], _LENIENT
]
Ident = Annotated[
    Annotated[str, Field(max_length=IDENT)] | Annotated[str, PlainValidator(_empty)], _LENIENT
]
Zone = Annotated[
    Annotated[str, Field(max_length=DATE)] | Annotated[str, PlainValidator(_empty)], _LENIENT
]
# What an event means nothing without: text or a number, present, not blank, within bounds.
RequiredNumber = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=NUMBER)
]
RequiredIdent = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=IDENT)
]
# `"1"`, `1` or `" 1 "`; blank, null, negative, huge, true or anything else is absent.
Code = Annotated[
    Annotated[int, Field(ge=0, le=CODE_MAX)] | None | _NONE, _LENIENT, BeforeValidator(_not_bool)
]
# `YYYY-MM-DD HH:MM:SS` (naive: the account's wall clock), ISO 8601 with an offset, or Unix
# seconds as a number or digits (aware). Anything else is absent.
Date = Annotated[datetime | None | _NONE, _LENIENT]
# `sms` or `whatsapp` in any case; another word is kept, lowercased; absent or odd is `sms`.
Channel = Annotated[
    Annotated[
        str,
        StringConstraints(strip_whitespace=True, to_lower=True, min_length=1, max_length=IDENT),
    ]
    | Annotated[str, PlainValidator(_sms)],
    _LENIENT,
]
# true/false, 1/0, "yes"/"no"...; anything else is true (the gateway only adds it to say so).
Flag = Annotated[bool | Annotated[bool, PlainValidator(_true)], _LENIENT]


def as_written(date: datetime | None) -> str:
    """A parsed gateway date as text to store: `2026-01-01 09:14:00`, with its offset when it
    had one; `""` when absent."""
    return "" if date is None else date.isoformat(sep=" ")


class _Model(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True, coerce_numbers_to_str=True)


class InboxBody(_Model):
    id: Ident = ""
    date: Date = None
    sender: RequiredNumber
    receiver: RequiredNumber
    content: Text = ""
    type: Channel = "sms"


class IsReply(_Model):
    reply: Flag = True
    orig_message_content: Text = ""
    orig_messageid: Ident = ""
    orig_messagedate: Date = None
    orig_sender: Number = ""
    orig_receiver: Number = ""
    orig_reference: Text = ""


class ReportBody(_Model):
    messageid: RequiredIdent
    datetime: Date = None
    sender: Number = ""
    receiver: Number = ""
    reference: Text = ""
    content: Text = ""
    delivery_code: Code = None
    delivery_status: Text = ""
    delivery_code_detail: Code = None
    delivery_code_detail_description: Text = ""
    delivery_status_datetime: Date = None
    read_status: Text = ""
    read_datetime: Date = None


class _Event(_Model):
    webhook_id: RequiredIdent
    username: Ident = ""
    timezone: Zone = ""


class InboxMessage(_Event):
    webhook_type: Literal["inbox_message"] = "inbox_message"
    message: InboxBody
    isreply: Annotated[IsReply | None, BeforeValidator(_object_or_none)] = None


class DeliveryReport(_Event):
    webhook_type: Literal["delivery_report"] = "delivery_report"
    message: ReportBody


class ReadReport(_Event):
    webhook_type: Literal["read_report"] = "read_report"
    message: ReportBody


_MODELS: dict[str, type[InboxMessage | DeliveryReport | ReadReport]] = {
    model.model_fields["webhook_type"].default: model
    for model in (InboxMessage, DeliveryReport, ReadReport)
}
_NAME = frozenset(string.ascii_lowercase + string.digits + "_-.")


class Unparsed(BaseModel):
    """An event the bridge cannot understand: stored and counted, never dropped. `problem`
    names the field and what is wrong, never its content."""

    webhook_id: str | None
    webhook_type: str | None
    problem: str


def _kind(value: Any) -> str | None:
    """A webhook type as the bridge names it (lowercased), or None when it is not a name. A
    name has few digits (`email2sms_received`): one cannot carry a phone number into the
    logs, metrics or on-call notices that name unknown types."""
    if not isinstance(value, str):
        return None
    kind = value.strip().lower()
    if kind in _MODELS:
        return kind
    name = 0 < len(kind) <= 60 and _NAME.issuperset(kind)
    return kind if name and sum(char.isdigit() for char in kind) <= 3 else None


def _ident(value: Any) -> str | None:
    """The `webhook_id` an event is deduplicated on: text or an integer, not blank."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, str) and 0 < len(value.strip()) <= IDENT:
        return value.strip()
    return None


# How `parse_event` words a problem: English in the logs and the database; on-call reads it
# in the team's language (`problem_phrase`), but for pydantic's own words.
_NOT_OBJECT = N_("event is not a JSON object")
_UNKNOWN_TYPE = N_("webhook_type {kind} unknown")
_NO_TYPE = N_("webhook_type missing")
_NOT_A_NAME = N_("webhook_type is not a name")
_MISSING = N_("{field} missing")


def problem_phrase(problem: str) -> Phrase:
    """A problem `parse_event` gave, to be said in another language: its own forms are
    translated, the field names and pydantic's words are kept as they are."""
    if problem in (_NOT_OBJECT, _NO_TYPE, _NOT_A_NAME):
        return Phrase(problem)
    head, _, kind = problem.removesuffix(" unknown").partition(" ")
    if problem.endswith(" unknown") and head == "webhook_type":
        return Phrase(_UNKNOWN_TYPE, {"kind": kind})
    field = problem.removesuffix(" missing")
    if field != problem and " " not in field:
        return Phrase(_MISSING, {"field": field})
    return Phrase(problem)  # pydantic's words, which no catalog has


def parse_event(raw: Any) -> InboxMessage | DeliveryReport | ReadReport | Unparsed:
    """Validate one element of a webhook body; say what is wrong instead of raising. The
    problem names the field and the rule it breaks, never the value."""
    if not isinstance(raw, dict):
        return Unparsed(webhook_id=None, webhook_type=None, problem=_NOT_OBJECT)
    webhook_type = raw.get("webhook_type")
    kind = _kind(webhook_type)
    model = _MODELS.get(kind) if kind is not None else None
    if model is None:
        if kind is not None:
            problem = _UNKNOWN_TYPE.format(kind=repr(kind))
        elif webhook_type is None or webhook_type == "":
            problem = _NO_TYPE
        else:
            problem = _NOT_A_NAME
        return Unparsed(
            webhook_id=_ident(raw.get("webhook_id")), webhook_type=kind, problem=problem
        )
    try:
        return model.model_validate(raw if webhook_type == kind else {**raw, "webhook_type": kind})
    except ValidationError as error:
        first = error.errors(include_url=False, include_context=False)[0]
        where = ".".join(str(part) for part in first["loc"]) or "event"
        value = first.get("input")
        if (
            first["type"] == "missing"
            or value is None
            or (isinstance(value, str) and not value.strip())
        ):
            problem = _MISSING.format(field=where)
        else:
            problem = f"{where}: {first['msg']}"
        return Unparsed(
            webhook_id=_ident(raw.get("webhook_id")), webhook_type=kind, problem=problem
        )


DELIVERED = 1  # the delivery_code of a message that reached the phone
# delivery_code → (status name, final?, failure?)
DELIVERY_CODES: dict[int, tuple[str, bool, bool]] = {
    0: ("SUBMITTED", False, False),
    DELIVERED: ("DELIVERED", True, False),
    2: ("NOT DELIVERED", True, True),
    3: ("BUFFERED", False, False),
    4: ("REJECTED", True, True),
    5: ("REJECTED", True, True),
    9: ("UNKNOWN", False, False),
}

# What each detail code means, as gettext msgids (`bridge/language.py`): the Dutch catalog
# uses the gateway's own wording. A name in capitals before `:` is the gateway's, never
# translated.
DETAIL_CODES: dict[int, str] = {
    10: N_("the receiver's number is invalid or unknown"),
    11: N_("the receiver is temporarily out of network range"),
    12: N_("a problem with the receiver's handset"),
    13: N_("a problem in the operator's network"),
    14: N_("the message expired, reason unknown"),
    15: N_("the receiver is blacklisted"),
    16: N_("a problem with the message content"),
    17: N_("the receiver cannot be handled"),
    18: N_("the operator refused it as spam"),
    19: N_("the subscriber cannot receive premium messages (blocked by the operator)"),
    2000: N_(
        "INSUFFICIENT_FUNDS: the account is out of credit; every message fails until credit "
        "is bought"
    ),
    2001: N_("TOO_LONG: the message is too long"),
    2002: N_("TOO_SHORT: the message is too short"),
    2003: N_("TIMEOUT: the gateway timed out"),
    2004: N_("GATEWAY_ISSUES: the gateway has problems"),
    2005: N_("INVALID_SENDER: the sender name or number is not allowed"),
    2006: N_("INVALID_NUMBER: the receiver's number is invalid"),
    2007: N_("a rejection the gateway did not explain (2007)"),
    4000: N_("UNKNOWN: rejected for an unknown reason"),
    4001: N_("EMPTY_MESSAGE: the message was empty"),
    4002: N_("EMPTY_CLIENT: no client was given"),
    4003: N_("LOCKED: the account is locked"),
    4004: N_("BLOCKED: the message was blocked"),
    4005: N_("JOB_FAILED: the sending job failed"),
    4006: N_("DUPLICATE: the message was a duplicate"),
    4007: N_("INVALID_CONTENT: the content is not allowed"),
}

# Detail codes that fail every message of the account, not one phone: these page on-call.
ACCOUNT_WIDE_DETAILS = frozenset({2000, 2004, 2005, 4003, 4004, 4005})


def describe_delivery(code: int | None, detail: int | None, words: Words = ENGLISH) -> str:
    """A delivery code and detail code in plain words (`words`' language); the status name
    is the gateway's own, and unknown codes stay as numbers."""
    if code is None:
        status = ""
    elif code in DELIVERY_CODES:
        status = DELIVERY_CODES[code][0]
    else:
        status = words.gettext("code {code}", code=code)
    if detail is None:
        return status or words.gettext("no delivery code")
    explained = (
        words.gettext(DETAIL_CODES[detail])
        if detail in DETAIL_CODES
        else words.gettext("detail code {detail}", detail=detail)
    )
    if not status:
        return explained
    return words.gettext("{status}: {explained}", status=status, explained=explained)
