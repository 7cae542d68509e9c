"""Delivery failures → grouped on-call alerts, in the manner of Alertmanager.

A failure's labels (delivery_code, delivery_code_detail, sender, receiver) pick the first
matching alerts route; the route's `group_by` labels make the group key. Each destination of
the route gets one alert message per group: posted `group_wait` after the group's first
failure, then edited in place at most every `group_interval` while failures keep coming, and
posted again once `repeat_interval` has passed since the last post. A group quiet for
`repeat_interval` starts afresh.

The notifications are ordinary outbox jobs of kind `alert`, due at the planned time, in a
lane of their own per (group, destination): durable, retried, and never two at once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy.ext.asyncio import AsyncConnection

from bridge import render
from bridge.chat.base import Permanent, Reason, Sent
from bridge.config import AlertRoute, Config
from bridge.routing import number_key
from bridge.smstools import DeliveryReport
from bridge.store import alerts as store
from bridge.store import outbox as outbox_store
from bridge.store.db import Database

if TYPE_CHECKING:
    from bridge.deliveries import Delivery

ALERT = "alert"
_LANE_PREFIX = "alert|"


def labels_of(report: DeliveryReport) -> dict[str, str]:
    """The labels a failure is grouped and matched by; a missing one is the empty string."""
    message = report.message

    def code(value: int | None) -> str:
        return "" if value is None else str(value)

    return {
        "delivery_code": code(message.delivery_code),
        "delivery_code_detail": code(message.delivery_code_detail),
        "sender": number_key(message.sender),
        "receiver": number_key(message.receiver),
    }


def group_key(route_index: int, route: AlertRoute, labels: dict[str, str]) -> str:
    grouped = ",".join(f"{label}={labels.get(label, '')}" for label in route.group_by)
    return f"{route_index}|{grouped}"


def lane(group_id: int, destination: str) -> str:
    return f"{_LANE_PREFIX}{group_id}|{destination}"


def group_of(lane_name: str) -> int:
    """The group an alert job's lane belongs to (the job carries no other payload)."""
    return int(lane_name.removeprefix(_LANE_PREFIX).split("|", 1)[0])


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
    labels = labels_of(report)
    route_index, route = config.alerts.route_for(labels)
    message = report.message
    code = f"{labels['delivery_code'] or '?'}/{labels['delivery_code_detail']}"
    group, _fresh = await store.add_failure(
        database,
        connection,
        group_key=group_key(route_index, route, labels),
        labels={label: labels[label] for label in route.group_by},
        sender=message.sender,
        timezone=report.timezone,
        code=code,
        receiver=labels["receiver"],
        at=now,
        event_id=event_id,
        quiet_after=route.repeat_interval,
    )
    jobs = 0
    for destination in route.to:
        due = await store.schedule(
            database,
            connection,
            group.id,
            destination,
            now=now,
            group_wait=route.group_wait,
            group_interval=route.group_interval,
        )
        if due is not None:
            jobs += await outbox_store.enqueue(
                database,
                connection,
                event_id=event_id,
                destination=destination,
                lane=lane(group.id, destination),
                kind=ALERT,
                now=now,
                due=due,
            )
    return jobs


def route_of(config: Config, group: store.Group) -> AlertRoute:
    if config.alerts is None:
        raise Permanent(Reason.CONFIG, "alerts are no longer configured")
    index = int(group.group_key.split("|", 1)[0])
    routes = config.alerts.routes
    return routes[index] if index < len(routes) else routes[-1]


async def deliver_alert(delivery: Delivery) -> None:
    """Post the group's alert, or edit the one posted, then plan the next if it grew."""
    job, database = delivery.job, delivery.database
    group_id = group_of(job.lane)
    async with database.transaction() as connection:
        loaded = await store.load(connection, group_id, job.destination)
    if loaded is None:
        raise Permanent(Reason.CONFIG, f"alert group {group_id} of job {job.id} is missing")
    group, notice = loaded
    route = route_of(delivery.config, group)
    destination = delivery.config.destinations.get(job.destination)
    mention = route.mention.get(destination.kind) if destination is not None else None
    # An alert is short (ten receivers at most): its first part is all of it.
    part = delivery.adapter.render(render.alert_post(group, mention))[0]
    now = delivery.now()
    repost = (
        notice.chat is None
        or notice.message is None
        or notice.posted_at is None
        or now - notice.posted_at >= route.repeat_interval
    )
    if not repost:
        assert notice.chat is not None and notice.message is not None
        try:
            await delivery.adapter.edit(Sent(notice.chat, notice.message, notice.message), part)
        except Permanent as error:
            detail = error.detail.lower()
            if "not found" not in detail and "not_found" not in detail:
                raise
            repost = True  # someone deleted the alert message: post it again
    if repost:
        sent = await delivery.adapter.send(part, None)
        async with database.transaction() as connection:
            await store.record_post(
                connection, group_id, job.destination, sent.chat, sent.message, now
            )
    async with database.transaction() as connection:
        current = await store.load(connection, group_id, job.destination, lock=True)
        assert current is not None
        latest, _ = current
        next_due = None
        if latest.count != group.count or latest.first_at != group.first_at:
            # Failures arrived while this was being sent: tell about them after the interval.
            next_due = now + route.group_interval
            added = await outbox_store.enqueue(
                database,
                connection,
                event_id=latest.last_event_id,
                destination=job.destination,
                lane=job.lane,
                kind=ALERT,
                now=now,
                due=next_due,
            )
            next_due = next_due if added else None
        await store.notified(
            connection, group_id, job.destination, count=group.count, now=now, next_due=next_due
        )
