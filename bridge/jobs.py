"""What an outbox job is: its kind, its typed payload, its lane, and what a handler is given.

Planning (ingest, reports, alerts, notices) and delivering (worker, deliveries) both import
this leaf and not each other. A payload is stored as JSON in `outbox.payload`; a lane is built
here and only here, and never parsed back: whatever a handler needs is in the payload.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError

from bridge import language

if TYPE_CHECKING:
    from bridge.chat.base import ChatAdapter
    from bridge.config import Config
    from bridge.smstools.api import SmstoolsApi
    from bridge.smstools.webhooks import DeliveryReport, InboxMessage, ReadReport, Unparsed
    from bridge.store.db import Database


class Kind(StrEnum):
    """What a job does once claimed; each kind has one payload type and one handler."""

    INBOX = "inbox"  # a customer message into its conversation's thread
    FAILURE_NOTE = "failure_note"  # a failed delivery, noted in the customer's thread
    READ = "read"  # a read report, as a line in the thread that shows the message
    ALERT = "alert"  # a group of failures, posted or edited for on-call
    NOTICE = "notice"  # a destination that fails for good, told to on-call
    REPLY = "reply"  # an agent's answer from a chat thread, sent to the customer by SMS
    REPLY_STATUS = "reply_status"  # a reply's gateway status, shown on the agent's message
    ANSWER_SHOWN = "answer_shown"  # a reply sent from elsewhere, shown in this thread too
    CREDIT = "credit"  # the Smstools balance fell under alerts.low_balance, or rose again


class _Payload(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: ClassVar[Kind]


class ConversationKey(_Payload):
    """A customer conversation at one destination: the line (receiver) and the customer."""

    receiver: str
    sender: str


class _ConversationPayload(_Payload):
    """A job about one customer conversation: it joins that conversation's lane."""

    conversation: ConversationKey


class _ReplyPayload(_ConversationPayload):
    """A job about one agent's reply in a conversation."""

    reply_id: int


class InboxJob(_ConversationPayload):
    kind: ClassVar[Kind] = Kind.INBOX


class FailureNoteJob(_ConversationPayload):
    kind: ClassVar[Kind] = Kind.FAILURE_NOTE
    conversation_id: int


class ReadJob(_Payload):
    kind: ClassVar[Kind] = Kind.READ
    messageid: str


class AlertJob(_Payload):
    kind: ClassVar[Kind] = Kind.ALERT
    group_id: int
    resolve: bool = False  # a check, once the group may have gone quiet, to say it is over


# The `NoticeJob.reason` of gateway events the bridge stored but could not understand.
NOT_UNDERSTOOD = "not_understood"


class NoticeJob(_Payload):
    kind: ClassVar[Kind] = Kind.NOTICE
    # What the notice is about: a destination that fails for good or moved; for events not
    # understood (`reason` NOT_UNDERSTOOD), their webhook type ("" when it had none).
    failing: str
    reason: str
    detail: str  # for events not understood: why (a field and a rule, never a value)
    # For a chat that moved: its old and new ids, so on-call reads the move in its language.
    old_chat: str | None = None
    new_chat: str | None = None


class ReplyJob(_ReplyPayload):
    """An agent's chat message to send to the customer; its text stays in `chat_events`."""

    kind: ClassVar[Kind] = Kind.REPLY


class ReplyStatusJob(_ReplyPayload):
    """Show the reply's current gateway status (a reaction, a note when it failed)."""

    kind: ClassVar[Kind] = Kind.REPLY_STATUS


class AnswerShownJob(_ReplyPayload):
    """Show an answer sent to the customer from another destination in this destination's
    thread of the conversation, with its current status (posted once, then edited)."""

    kind: ClassVar[Kind] = Kind.ANSWER_SHOWN
    author: str  # who answered, as their platform names them
    text: str  # what the customer was sent, exactly (blanked by `forget`)
    update: bool = False  # a status change: edit the post made before, never post anew


class CreditJob(_Payload):
    kind: ClassVar[Kind] = Kind.CREDIT
    low: bool  # False: the balance is back above the threshold
    balance: str
    threshold: str


Payload = (
    InboxJob
    | FailureNoteJob
    | ReadJob
    | AlertJob
    | NoticeJob
    | ReplyJob
    | ReplyStatusJob
    | AnswerShownJob
    | CreditJob
)

PAYLOADS: dict[str, type[Payload]] = {
    payload.kind: payload
    for payload in (
        InboxJob,
        FailureNoteJob,
        ReadJob,
        AlertJob,
        NoticeJob,
        ReplyJob,
        ReplyStatusJob,
        AnswerShownJob,
        CreditJob,
    )
}


@dataclass(frozen=True)
class Unreadable:
    """A stored payload this code cannot read (a kind or shape from another version)."""

    problem: str


def read_payload(kind: str, stored: Any) -> Payload | Unreadable:
    """The typed payload of a stored job, or what is wrong with it; never raises."""
    model = PAYLOADS.get(kind)
    if model is None:
        return Unreadable(f"unknown job kind {kind!r}")
    try:
        payload: Payload = model.model_validate(stored if stored is not None else {})
        return payload
    except ValidationError as error:
        return Unreadable(f"{kind} job payload: {error.errors()[0]['msg']}")


def lane(destination: str, payload: Payload) -> str:
    """The lane a job joins: jobs of one lane are delivered one at a time, in order.

    Everything about one customer conversation shares its lane, so a failure note lands in
    order with the messages around it and two quick answers reach the customer as typed;
    every other job has a lane of its own kind.
    """
    match payload:
        case _ConversationPayload(conversation=conversation):
            return conversation_lane(destination, conversation)
        case ReadJob(messageid=messageid):
            parts: tuple[object, ...] = (destination, "read", messageid)
        case AlertJob(group_id=group_id, resolve=False):
            parts = ("alert", group_id, destination)
        case AlertJob(group_id=group_id, resolve=True):
            # Its own lane: a check due in an hour must not hold back the alert's edits.
            parts = ("alert-quiet", group_id, destination)
        case NoticeJob(failing=failing, reason=reason, detail=detail):
            # Events not understood are told once per reason, not once per webhook type.
            told = (failing, reason, detail) if reason == NOT_UNDERSTOOD else (failing, reason)
            parts = ("notice", *told, destination)
        case CreditJob():
            parts = ("credit", destination)
    return "|".join(str(part) for part in parts)


def conversation_lane(destination: str, conversation: ConversationKey) -> str:
    """The lane of every job about one customer conversation at `destination`."""
    return "|".join((destination, conversation.receiver, conversation.sender))


@dataclass(frozen=True)
class Job:
    """A claimed outbox job."""

    id: int
    event_id: int | None
    destination: str
    lane: str
    kind: str
    payload: Payload | Unreadable
    attempts: int
    created_at: float
    last_error: str | None = None
    unsure: bool = False  # an earlier attempt may have posted without recording it

    @property
    def unsure_since(self) -> float | None:
        """Since when an unsure job's earlier posts may be on the platform (a minute before
        it was queued: clocks of worker hosts and platform differ a little)."""
        return self.created_at - 60 if self.unsure else None


@dataclass(frozen=True)
class Follower:
    """An inbox job queued right behind the head of its lane, claimed with it to be shown in
    the same chat message (`combining`)."""

    job: Job
    event: InboxMessage
    received_at: float


@dataclass(frozen=True)
class Delivery:
    """Everything a handler may use for one job (and, for a combined post, its followers)."""

    database: Database
    config: Config
    adapter: ChatAdapter
    job: Job
    event: InboxMessage | DeliveryReport | ReadReport | Unparsed | None  # None: no event
    received_at: float
    now: Callable[[], float]
    smstools: SmstoolsApi | None = None  # the send API, for replies; None: not configured
    # Called with (destination, "sent" | "refused") once per reply that got there (metrics).
    count_reply: Callable[[str, str], None] | None = None
    # Inbox jobs of the same lane, in order, that one post may show with this one.
    followers: tuple[Follower, ...] = ()

    @property
    def words(self) -> language.Words:
        """The translator of the job's destination: every word the handler writes there."""
        destination = self.config.destinations.get(self.job.destination)
        return language.words(destination.language if destination else language.DEFAULT)
