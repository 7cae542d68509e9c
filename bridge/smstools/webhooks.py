"""Smstools webhooks: payload models and the gateway's code tables.

Models validate what the bridge relies on and keep every other field (`extra="allow"`):
the raw event is stored anyway, and newer payloads add fields we do not know yet.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, TypeAdapter, ValidationError

WEBHOOK_TYPES = ("inbox_message", "delivery_report", "read_report")

# The gateway sends numbers and codes as strings, sometimes as JSON numbers: accept both.
Text = Annotated[
    str, BeforeValidator(lambda value: str(value) if isinstance(value, int) else value)
]
# Codes are small numbers; one beyond a 32-bit integer is not a code (and no database column
# would take it): such an event is kept as not understood rather than failing the whole body.
Code = Annotated[
    int,
    BeforeValidator(lambda value: value.strip() if isinstance(value, str) else value),
    Field(ge=0, le=2_147_483_647),
]

# Bounds on what is stored in indexed columns or shown in headings. A phone number has at most
# 15 digits and a sender name 11 characters; ids and dates are short. (PostgreSQL refuses
# index entries over ~2.7 kB: an unbounded sender would make a body unstorable forever.)
NUMBER = 64
IDENT = 200
DATE = 64


class _Model(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)


class InboxBody(_Model):
    id: Text = Field("", max_length=IDENT)
    date: str = Field("", max_length=DATE)
    sender: Text = Field(min_length=1, max_length=NUMBER)
    receiver: Text = Field(min_length=1, max_length=NUMBER)
    content: str
    type: Literal["sms", "whatsapp"] = "sms"


class IsReply(_Model):
    reply: bool = True
    orig_message_content: str = ""
    orig_messageid: str = Field("", max_length=IDENT)
    orig_messagedate: str = Field("", max_length=DATE)
    orig_sender: Text = Field("", max_length=NUMBER)
    orig_receiver: Text = Field("", max_length=NUMBER)
    orig_reference: str = ""


class ReportBody(_Model):
    messageid: str = Field(min_length=1, max_length=IDENT)
    datetime: str = Field("", max_length=DATE)
    sender: Text = Field("", max_length=NUMBER)
    receiver: Text = Field("", max_length=NUMBER)
    reference: str = ""
    content: str = ""
    delivery_code: Code | None = None
    delivery_status: str = ""
    delivery_code_detail: Code | None = None
    delivery_code_detail_description: str = ""
    delivery_status_datetime: str = Field("", max_length=DATE)
    read_status: str = ""
    read_datetime: str = Field("", max_length=DATE)


class _Event(_Model):
    webhook_id: str = Field(min_length=1, max_length=IDENT)
    username: str = Field("", max_length=IDENT)
    timezone: str = Field("", max_length=DATE)


class InboxMessage(_Event):
    webhook_type: Literal["inbox_message"]
    message: InboxBody
    isreply: IsReply | None = None


class DeliveryReport(_Event):
    webhook_type: Literal["delivery_report"]
    message: ReportBody


class ReadReport(_Event):
    webhook_type: Literal["read_report"]
    message: ReportBody


Event = Annotated[InboxMessage | DeliveryReport | ReadReport, Field(discriminator="webhook_type")]
_event_adapter: TypeAdapter[InboxMessage | DeliveryReport | ReadReport] = TypeAdapter(Event)


class Unparsed(BaseModel):
    """An event the bridge cannot understand: stored and counted, never dropped."""

    webhook_id: str | None
    webhook_type: str | None
    problem: str


def parse_event(raw: Any) -> InboxMessage | DeliveryReport | ReadReport | Unparsed:
    """Validate one element of a webhook body; say what is wrong instead of raising."""
    if not isinstance(raw, dict):
        return Unparsed(webhook_id=None, webhook_type=None, problem="event is not a JSON object")
    webhook_id = raw.get("webhook_id")
    webhook_type = raw.get("webhook_type")
    ident = webhook_id if isinstance(webhook_id, str) and 0 < len(webhook_id) <= IDENT else None
    kind = webhook_type if isinstance(webhook_type, str) else None
    if kind not in WEBHOOK_TYPES:
        shown = repr(kind)[:60] if kind is not None else "missing"
        return Unparsed(
            webhook_id=ident, webhook_type=kind, problem=f"webhook_type {shown} unknown"
        )
    try:
        return _event_adapter.validate_python(raw)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"][1:]) or "event"
        return Unparsed(webhook_id=ident, webhook_type=kind, problem=f"{where}: {first['msg']}")


# delivery_code → (status name, final?, failure?)
DELIVERY_CODES: dict[int, tuple[str, bool, bool]] = {
    0: ("SUBMITTED", False, False),
    1: ("DELIVERED", True, False),
    2: ("NOT DELIVERED", True, True),
    3: ("BUFFERED", False, False),
    4: ("REJECTED", True, True),
    5: ("REJECTED", True, True),
    9: ("UNKNOWN", False, False),
}

DETAIL_CODES: dict[int, str] = {
    10: "the receiver's number is invalid or unknown",
    11: "the receiver is temporarily out of network range",
    12: "a problem with the receiver's handset",
    13: "a problem in the operator's network",
    14: "the message expired, reason unknown",
    15: "the receiver is blacklisted",
    16: "a problem with the message content",
    17: "the receiver cannot be handled",
    18: "the operator refused it as spam",
    19: "the subscriber cannot receive premium messages (blocked by the operator)",
    2000: "INSUFFICIENT_FUNDS: the account is out of credit; every message fails until credit "
    "is bought",
    2001: "TOO_LONG: the message is too long",
    2002: "TOO_SHORT: the message is too short",
    2003: "TIMEOUT: the gateway timed out",
    2004: "GATEWAY_ISSUES: the gateway has problems",
    2005: "INVALID_SENDER: the sender name or number is not allowed",
    2006: "INVALID_NUMBER: the receiver's number is invalid",
    2007: "a rejection the gateway did not explain (2007)",
    4000: "UNKNOWN: rejected for an unknown reason",
    4001: "EMPTY_MESSAGE: the message was empty",
    4002: "EMPTY_CLIENT: no client was given",
    4003: "LOCKED: the account is locked",
    4004: "BLOCKED: the message was blocked",
    4005: "JOB_FAILED: the sending job failed",
    4006: "DUPLICATE: the message was a duplicate",
    4007: "INVALID_CONTENT: the content is not allowed",
}

# Detail codes that fail every message of the account, not one phone: these page on-call.
ACCOUNT_WIDE_DETAILS = frozenset({2000, 2004, 2005, 4003, 4004, 4005})


def describe_delivery(code: int | None, detail: int | None) -> str:
    """Plain English for a delivery code and detail code; unknown codes stay as numbers."""
    status = DELIVERY_CODES.get(code, (f"code {code}", False, False))[0] if code is not None else ""
    if detail is None:
        return status or "no delivery code"
    explained = DETAIL_CODES.get(detail, f"detail code {detail}")
    return f"{status}: {explained}" if status else explained
