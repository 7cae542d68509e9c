"""Delivery failures → grouped on-call alerts, in the manner of Alertmanager.

A failure's labels (delivery_code, delivery_code_detail, sender, receiver) pick the first
matching alerts route; the route's matchers and its `group_by` values make the group key.
Each destination of the route gets one alert message per group: posted `group_wait` after the
group's first failure, then edited in place at most every `group_interval` while failures keep
coming, and posted again once `repeat_interval` has passed since the last post. Once a group
has had no new failure for `resolve_after` (default `group_interval`) its message is edited to
say it is over; a failure after that posts a new message. A group quiet for `repeat_interval`
starts afresh. Only account-wide problems, or groups above `page_above`, carry the mention;
a route with `lone_failures: note` does not tell on-call of the others at all (`tells_on_call`).

The rules are pure functions (`add_failure`, `schedule`, `next_action`), tested without a
database or HTTP; `plan` runs them inside the webhook's transaction, and the notifications are
ordinary outbox jobs of kind `alert`, due at the planned time: durable, retried, one at a time.
"""

from __future__ import annotations

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


@dataclass(frozen=True)
class Failure:
    """One failed delivery, as alerts see it."""

    labels: dict[str, str]
    sender: str
    timezone: str
    receiver: str
    event_id: int

    @property
    def code(self) -> str:
        return f"{self.labels['delivery_code'] or '?'}/{self.labels['delivery_code_detail']}"


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
    return Failure(labels, message.sender, report.timezone, receiver, event_id)


def route_identity(route: AlertRoute) -> dict[str, list[str]]:
    """What names a route whatever its position in the config: its matchers."""
    return {label: sorted(values) for label, values in sorted(route.matchers.items())}


def group_key(route: AlertRoute, labels: dict[str, str]) -> str:
    grouped = {label: labels.get(label, "") for label in route.group_by}
    return key_of(route_identity(route), grouped)


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
    """The group with one more failure. A new group (count 0) or one quiet for
    `repeat_interval` starts from zero: a new alert message, not an edit of an old one."""
    fresh = group.count == 0 or at - group.last_at > route.repeat_interval
    codes = {} if fresh else dict(group.codes)
    receivers = [] if fresh else list(group.receivers)
    others = 0 if fresh else group.others
    codes[failure.code] = codes.get(failure.code, 0) + 1
    if failure.receiver in receivers:
        pass
    elif len(receivers) < MAX_RECEIVERS:
        receivers.append(failure.receiver)
    else:
        others += 1
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
    RESOLVE = "resolve"  # quiet for `resolve_after`: edit the message to say it is over
    NOTHING = "nothing"  # the message already says all there is


def next_action(notice: Notice, group: Group, now: float, route: AlertRoute) -> Action:
    if notice.message is None or notice.posted_at is None:
        return Action.POST
    if notice.resolved_at is not None:
        return Action.REPOST  # the message says "quiet": new failures need a new one
    if now - notice.posted_at >= route.repeat_interval:
        return Action.REPOST
    if notice.notified_count == group.count:
        return Action.NOTHING
    return Action.EDIT


def resolve_after(route: AlertRoute) -> float:
    """How long a group must have no new failure before its alert says it is over: the
    route's `resolve_after`, by default its `group_interval`."""
    return route.quiet_after  # the config's name for the value with its default


def resolve_after_ends(group: Group, route: AlertRoute, now: float) -> float:
    """When to check whether the group went quiet: `resolve_after` after its last failure."""
    return max(now, group.last_at + resolve_after(route))


def resolve_action(notice: Notice, group: Group, now: float, route: AlertRoute) -> Action:
    """RESOLVE when the posted alert tells all failures and none came for `resolve_after`;
    else NOTHING (a newer failure has its own notification and its own later check)."""
    told = notice.message is not None and notice.notified_count == group.count
    quiet = now - group.last_at >= resolve_after(route)
    if told and quiet and notice.resolved_at is None:
        return Action.RESOLVE
    return Action.NOTHING


def pages(group: Group, route: AlertRoute) -> bool:
    """Whether the alert carries the route's mention: a problem of the whole account (an
    account-wide detail code), or more than `page_above` failures. A lone per-recipient
    failure (a phone off, an unknown number) is posted without paging anyone."""
    details = {code.partition("/")[2] for code in group.codes}
    account_wide = any(
        detail.isdigit() and int(detail) in ACCOUNT_WIDE_DETAILS for detail in details
    )
    return account_wide or group.count > route.page_above


def tells_on_call(group: Group, route: AlertRoute) -> bool:
    """Whether the group's alert is posted to the route's destinations. With
    `lone_failures: note` a group that does not page (per-recipient codes, at most
    `page_above` failures) is only noted in the customer's thread; once it pages, it is
    posted as usual."""
    return route.lone_failures == "post" or pages(group, route)


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
        labels={label: failure.labels[label] for label in route.group_by},
        at=now,
        event_id=event_id,
    )
    counted = add_failure(group, failure, now, route)
    await alerts_store.save_group(connection, counted)
    if counted.count == 1 and group.count > 0:
        await alerts_store.forget_notices(connection, group.id)
    if not tells_on_call(counted, route):
        return 0
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
