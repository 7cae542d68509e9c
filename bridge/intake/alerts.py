"""Delivery failures → grouped on-call alerts, in the manner of Alertmanager.

A failure's labels (delivery_code, delivery_code_detail, sender, receiver) pick the first
matching alerts route; the route's matchers and its `group_by` values make the group key,
except for an account-wide cause (out of credit, account locked, sender not allowed: the
detail codes in `ACCOUNT_WIDE_DETAILS`), which is one incident whoever sent: grouped by its
code alone, and joined by the credit watch's low-balance notice (`plan_low_credit`).

Each destination of the route gets one alert message per group: posted `group_wait` after the
group's first failure, then edited in place at most every `group_interval` while failures keep
coming, and posted again once `repeat_interval` has passed since the last post. An incident
quiet for `resolve_after` (default `group_interval`) stays red and says since when nothing
new failed; it resolves only when its cause is gone (`plan_cleared`: the credit is back, or a
message from one of its senders is delivered after its last failure), and the resolution,
saying what was never sent, is also posted as a reply to the alert. A per-recipient group
is not an incident: with `lone_failures: note` (the default) it is only noted in the
customer's thread until it pages (above `page_above`); once paged and quiet, its alert is
edited to say so and a later failure posts a new one. A group quiet for `repeat_interval`
starts afresh.

The rules are pure functions (`add_failure`, `schedule`, `next_action`, `check_action`,
`clears`), tested without a database or HTTP; `plan` runs them inside the webhook's
transaction, and the notifications are ordinary outbox jobs of kind `alert`, due at the
planned time: durable, retried, one at a time.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, replace
from enum import Enum

from sqlalchemy.ext.asyncio import AsyncConnection

from bridge import phones
from bridge.config import AlertRoute, Alerts, Config
from bridge.jobs import AlertJob
from bridge.smstools.webhooks import ACCOUNT_WIDE_DETAILS, DeliveryReport
from bridge.store import alerts as alerts_store
from bridge.store import outbox as outbox_store
from bridge.store.alerts import Group, Notice
from bridge.store.db import Database

MAX_RECEIVERS = 10
MAX_SENDERS = 10
MAX_REFERENCES = 10  # further references are counted under the last one kept
MAX_SAMPLES = 10  # distinct texts kept to say what was never sent
CREDIT = 2000  # INSUFFICIENT_FUNDS: the detail code of an account out of credit
# The labels of the failures a low balance foretells, to find their route and group.
CREDIT_LABELS = {
    "delivery_code": "5",
    "delivery_code_detail": str(CREDIT),
    "sender": "",
    "receiver": "",
}


@dataclass(frozen=True)
class Failure:
    """One failed delivery, as alerts see it."""

    labels: dict[str, str]
    sender: str
    timezone: str
    receiver: str
    event_id: int
    reference: str = ""
    text: str = ""

    @property
    def code(self) -> str:
        return f"{self.labels['delivery_code'] or '?'}/{self.labels['delivery_code_detail']}"

    @property
    def cause(self) -> int | None:
        """The account-wide detail code this failure shows, if any."""
        return account_wide(self.labels)


def account_wide(labels: dict[str, str]) -> int | None:
    """The detail code when it fails the whole account (`ACCOUNT_WIDE_DETAILS`), else None."""
    detail = labels.get("delivery_code_detail", "")
    if detail.isdigit() and int(detail) in ACCOUNT_WIDE_DETAILS:
        return int(detail)
    return None


def failure_of(report: DeliveryReport, event_id: int) -> Failure:
    """The labels a failure is grouped and matched by; a missing one is the empty string."""
    message = report.message

    def code(value: int | None) -> str:
        return "" if value is None else str(value)

    receiver = phones.key(message.receiver)
    labels = {
        "delivery_code": code(message.delivery_code),
        "delivery_code_detail": code(message.delivery_code_detail),
        "sender": phones.key(message.sender),
        "receiver": receiver,
    }
    return Failure(
        labels,
        message.sender,
        report.timezone,
        receiver,
        event_id,
        reference=message.reference.strip(),
        text=message.content,
    )


def route_identity(route: AlertRoute) -> dict[str, list[str]]:
    """What names a route whatever its position in the config: its matchers."""
    return {label: sorted(values) for label, values in sorted(route.matchers.items())}


def grouped_by(route: AlertRoute, labels: dict[str, str]) -> dict[str, str]:
    """The labels whose values make the group: the detail code alone for an account-wide
    cause (one incident whoever sent), else the route's `group_by`."""
    if account_wide(labels) is not None:
        return {"delivery_code_detail": labels["delivery_code_detail"]}
    return {label: labels.get(label, "") for label in route.group_by}


def group_key(route: AlertRoute, labels: dict[str, str]) -> str:
    return key_of(route_identity(route), grouped_by(route, labels))


def key_of(route: dict[str, list[str]] | None, grouped: dict[str, str]) -> str:
    """A group key: the identity of the route (`route_identity`) and the values of its
    `group_by` labels, as JSON."""
    key = {"route": route, "group_by": grouped}
    return json.dumps(key, sort_keys=True, separators=(",", ":"))


def route_of(alerts: Alerts, group: Group) -> AlertRoute:
    """The route a group was formed by, found by its matchers; the top level if it is gone."""
    for route in alerts.routes:
        if route_identity(route) == group.route:
            return route
    return alerts.top


def add_failure(group: Group, failure: Failure, at: float, route: AlertRoute) -> Group:
    """The group with one more failure. A new group (count 0, perhaps a low-credit notice
    alone), one quiet for `repeat_interval` or one whose cause went away starts from zero:
    a new alert message, not an edit of an old one."""
    resolved = group.cleared_at is not None
    fresh = group.count == 0 or resolved or at - group.last_at > route.repeat_interval
    codes = {} if fresh else dict(group.codes)
    receivers = [] if fresh else list(group.receivers)
    others = 0 if fresh else group.others
    senders = [] if fresh else list(group.senders)
    unsent = {} if fresh else dict(group.unsent)
    samples = {} if fresh else dict(group.samples)
    codes[failure.code] = codes.get(failure.code, 0) + 1
    if failure.receiver in receivers:
        pass
    elif len(receivers) < MAX_RECEIVERS:
        receivers.append(failure.receiver)
    else:
        others += 1
    sender = failure.labels["sender"]
    if sender not in senders and len(senders) < MAX_SENDERS:
        senders.append(sender)
    reference = failure.reference
    if reference not in unsent and len(unsent) >= MAX_REFERENCES:
        reference = list(unsent)[-1]
    unsent[reference] = unsent.get(reference, 0) + 1
    digest = hashlib.sha256(f"{failure.reference}\n{failure.text}".encode()).hexdigest()[:16]
    if digest not in samples and len(samples) < MAX_SAMPLES:
        samples[digest] = failure.event_id
    return replace(
        group,
        count=1 if fresh else group.count + 1,
        codes=codes,
        receivers=receivers,
        others=others,
        first_at=at if fresh else min(group.first_at, at),
        last_at=at if fresh else max(group.last_at, at),
        last_event_id=failure.event_id,
        sender=failure.sender if fresh else group.sender,
        timezone=failure.timezone if fresh else group.timezone,
        cause=failure.cause,
        senders=senders,
        unsent=unsent,
        samples=samples,
        balance=None if resolved else group.balance,
        cleared_at=None,
    )


def schedule(notice: Notice, now: float, route: AlertRoute) -> float | None:
    """When the destination should next hear about the group; None when that is already
    planned. The first notification waits `group_wait`, later ones `group_interval` after
    the previous."""
    if notice.pending_at is not None:
        return None
    if notice.notified_at is None:
        return now + route.group_wait
    return max(now, notice.notified_at + route.group_interval)


class Action(Enum):
    """What a due alert notification does (Alertmanager's `needsUpdate`, as an answer)."""

    POST = "post"  # nothing posted yet for this run of the group
    EDIT = "edit"  # the group grew: update the posted message in place
    REPOST = "repost"  # `repeat_interval` passed since the post, or it said it was over
    QUIET = "quiet"  # nothing new for `resolve_after`: say since when, in place
    RESOLVE = "resolve"  # the incident's cause is gone: say so, and what is still undone
    NOTHING = "nothing"  # the message already says all there is


def next_action(notice: Notice, group: Group, now: float, route: AlertRoute) -> Action:
    if notice.message is None or notice.posted_at is None:
        return Action.POST
    if notice.resolved_at is not None:
        return Action.REPOST  # the message says it is over: new failures need a new one
    if now - notice.posted_at >= route.repeat_interval:
        return Action.REPOST
    if notice.notified_count == group.count:
        return Action.NOTHING
    return Action.EDIT


def resolve_after(route: AlertRoute) -> float:
    """How long a group must have no new failure before its alert says it is quiet: the
    route's `resolve_after`, by default its `group_interval`."""
    return route.quiet_after  # the config's name for the value with its default


def resolve_after_ends(group: Group, route: AlertRoute, now: float) -> float:
    """When to check whether the group went quiet: `resolve_after` after its last failure."""
    return max(now, group.last_at + resolve_after(route))


def is_incident(group: Group) -> bool:
    """An account-wide cause (or the low credit that foretells one): it stays open until the
    cause is gone, however quiet."""
    return group.cause is not None or group.balance is not None


def check_action(notice: Notice, group: Group, now: float, route: AlertRoute) -> Action:
    """What a check on a posted alert does. RESOLVE once an incident's cause is gone. QUIET
    when the alert tells all failures and none came for `resolve_after`, for a group that
    pages (an incident stays red; a per-recipient group's alert is then over); a group that
    does not page has no quiet edit. Else NOTHING (a newer failure has its own notification
    and its own later check)."""
    if notice.message is None or notice.resolved_at is not None:
        return Action.NOTHING
    if group.cleared_at is not None:
        return Action.RESOLVE
    told = notice.notified_count == group.count
    quiet = group.count > 0 and now - group.last_at >= resolve_after(route)
    if told and quiet and pages(group, route):
        return Action.QUIET
    return Action.NOTHING


def pages(group: Group, route: AlertRoute) -> bool:
    """Whether the alert carries the route's mention and shows red: an incident (an
    account-wide detail code, or the credit running low), or more than `page_above`
    failures. A lone per-recipient failure (a phone off, an unknown number) pages no one."""
    details = {code.partition("/")[2] for code in group.codes}
    account_wide_code = any(
        detail.isdigit() and int(detail) in ACCOUNT_WIDE_DETAILS for detail in details
    )
    return account_wide_code or is_incident(group) or group.count > route.page_above


def tells_on_call(group: Group, route: AlertRoute) -> bool:
    """Whether the group's alert is posted to the route's destinations. With
    `lone_failures: note` (the default) a group that does not page (per-recipient codes, at
    most `page_above` failures) is only noted in the customer's thread; once it pages, it is
    posted as usual. With `lone_failures: post` it is posted, without a mention."""
    return route.lone_failures == "post" or pages(group, route)


def clears(group: Group, now: float, *, credit_back: bool, delivered_from: str | None) -> bool:
    """Whether an open incident's cause is gone: the credit rose above `alerts.low_balance`
    (for an out-of-credit incident), or a message from one of its senders was delivered
    after its last failure."""
    if group.cleared_at is not None or not is_incident(group):
        return False
    if credit_back and (group.cause == CREDIT or group.balance is not None):
        return True
    return (
        delivered_from is not None
        and group.count > 0
        and delivered_from in group.senders
        and now > group.last_at
    )


async def plan(
    database: Database,
    connection: AsyncConnection,
    config: Config,
    report: DeliveryReport,
    event_id: int,
    now: float,
) -> int:
    """Count a new failure into its group; schedule a notification per destination that has
    none pending. Returns the number of outbox jobs added."""
    if config.alerts is None:
        return 0
    failure = failure_of(report, event_id)
    route = config.alerts.route_for(failure.labels)
    group = await alerts_store.lock_group(
        database,
        connection,
        group_key=group_key(route, failure.labels),
        route=route_identity(route),
        labels=grouped_by(route, failure.labels),
        at=now,
        event_id=event_id,
    )
    counted = add_failure(group, failure, now, route)
    await alerts_store.save_group(connection, counted)
    if counted.count == 1 and group.count > 0:
        await alerts_store.forget_notices(connection, group.id)
    if not tells_on_call(counted, route):
        return 0
    return await _schedule_notices(database, connection, counted, route, event_id, now)


async def _schedule_notices(
    database: Database,
    connection: AsyncConnection,
    group: Group,
    route: AlertRoute,
    event_id: int | None,
    now: float,
) -> int:
    """A notification per destination of the route that has none pending."""
    jobs = 0
    for destination in route.to:
        notice = await alerts_store.lock_notice(database, connection, group.id, destination)
        due = schedule(notice, now, route)
        if due is None:
            continue
        await alerts_store.save_notice(connection, replace(notice, pending_at=due))
        jobs += await outbox_store.enqueue(
            database,
            connection,
            event_id=event_id,
            destination=destination,
            payload=AlertJob(group_id=group.id),
            now=now,
            due=due,
        )
    return jobs


async def plan_low_credit(
    database: Database, connection: AsyncConnection, alerts: Alerts, balance: str, now: float
) -> int:
    """The credit watch read a balance under `alerts.low_balance`: open (or update) the
    out-of-credit incident, so the notice and the failures that follow are one alert with
    one mention. Returns the number of outbox jobs added."""
    route = alerts.route_for(CREDIT_LABELS)
    group = await alerts_store.lock_group(
        database,
        connection,
        group_key=group_key(route, CREDIT_LABELS),
        route=route_identity(route),
        labels=grouped_by(route, CREDIT_LABELS),
        at=now,
        event_id=0,
    )
    low = low_credit(group, balance, now, route)
    await alerts_store.save_group(connection, low)
    if low.count == 0 and (group.count > 0 or group.cleared_at is not None):
        await alerts_store.forget_notices(connection, group.id)
    return await _schedule_notices(database, connection, low, route, None, now)


def low_credit(group: Group, balance: str, now: float, route: AlertRoute) -> Group:
    """The incident with the low balance read: an open one keeps its failures; a resolved
    or long quiet one starts afresh from the notice."""
    stale = group.count > 0 and now - group.last_at > route.repeat_interval
    if group.cleared_at is None and not stale:
        return replace(group, cause=CREDIT, balance=balance)
    return replace(
        group,
        count=0,
        codes={},
        receivers=[],
        others=0,
        senders=[],
        unsent={},
        samples={},
        first_at=now,
        last_at=now,
        cause=CREDIT,
        balance=balance,
        cleared_at=None,
    )


@dataclass
class OpenIncidents:
    """The open incidents as one transaction last read them, so that a body of delivered
    messages reads them once rather than once a message (a query inside the group commit
    for each). Forgotten, and read again when next needed, after anything in the
    transaction may have opened, changed or cleared one (`forget`)."""

    groups: list[Group] | None = None

    async def read(self, connection: AsyncConnection) -> list[Group]:
        if self.groups is None:
            self.groups = await alerts_store.open_incidents(connection)
        return self.groups

    def forget(self) -> None:
        self.groups = None


async def plan_cleared(
    database: Database,
    connection: AsyncConnection,
    now: float,
    *,
    credit_back: bool = False,
    delivered_from: str | None = None,
    incidents: OpenIncidents | None = None,
) -> int:
    """Resolve the open incidents whose cause is gone (`clears`): each alert posted for them
    gets a job that says so. Returns the number of outbox jobs added. `incidents`: what
    this transaction read of them before, if anything (read here otherwise)."""
    incidents = incidents or OpenIncidents()
    jobs = 0
    for group in await incidents.read(connection):
        if not clears(group, now, credit_back=credit_back, delivered_from=delivered_from):
            continue
        incidents.forget()  # cleared here, or changed since it was read
        if not await alerts_store.clear(connection, group, now):
            continue
        for destination in await alerts_store.destinations_told(connection, group.id):
            jobs += await outbox_store.enqueue(
                database,
                connection,
                event_id=None,
                destination=destination,
                payload=AlertJob(group_id=group.id, resolve=True),
                now=now,
            )
    return jobs
