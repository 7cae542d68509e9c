"""The intake after the webhook path: stored bodies become events and jobs, oldest first, each
once, in a conversation's order; a failed planning leaves them waiting, nothing half done."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from sqlalchemy import func, select, text

from bridge.config import load
from bridge.intake.planning import Intake
from bridge.ops.doctor import Status, intake_finding
from bridge.settings import normalise_database_url
from bridge.store import events as events_store
from bridge.store.db import UNAVAILABLE, Database
from bridge.store.migrations import migrate
from bridge.store.schema import events, outbox, webhook_requests
from tests.support.harness import plan_all, store_webhook
from tests.support.pipeline_fixtures import inbox

CONFIG = load(None, {})


async def jobs_by_lane(database: Database) -> dict[str, list[str]]:
    """Each lane's jobs in delivery order (job id), as the webhook ids they came from."""
    query = (
        select(outbox.c.lane, events.c.webhook_id)
        .join(events, events.c.id == outbox.c.event_id)
        .order_by(outbox.c.id)
    )
    lanes: dict[str, list[str]] = {}
    async with database.transaction() as connection:
        for lane, webhook_id in await connection.execute(query):
            lanes.setdefault(lane, []).append(webhook_id)
    return lanes


async def test_bodies_are_planned_oldest_first_and_a_conversation_keeps_its_order(
    database: Database,
) -> None:
    sent = [
        inbox("32470000001", "first", webhook_id="x1"),
        inbox("32470000002", "other", webhook_id="y1"),
        inbox("32470000001", "second", webhook_id="x2"),
        inbox("32470000001", "third", webhook_id="x3"),
    ]
    for n, event in enumerate(sent):
        await store_webhook(database, [event], 1000.0 + n)
    async with database.transaction() as connection:
        assert len(await events_store.waiting(database, connection, 0, 10)) == 4
    await plan_all(Intake(database, CONFIG, time.time))
    lanes = sorted((await jobs_by_lane(database)).values())
    assert lanes == [["x1", "x2", "x3"], ["y1"]]
    async with database.transaction() as connection:
        assert await events_store.waiting(database, connection, 0, 10) == []
        assert await events_store.waiting_backlog(connection) == (0, None)


async def test_a_batch_is_planned_once_more_than_a_transaction_takes_is_waiting(
    database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bridge.intake import planning

    monkeypatch.setattr(planning, "PLAN_BODIES", 3)  # a batch of three bodies per transaction
    for n in range(7):
        await store_webhook(database, [inbox("32470000001", f"m{n}", webhook_id=f"m{n}")], 1.0)
    intake = Intake(database, CONFIG, time.time)
    rounds = [await intake.plan() for _ in range(4)]
    assert rounds == [True, True, False, False]  # 3, 3, 1, then nothing waits
    assert list((await jobs_by_lane(database)).values()) == [[f"m{n}" for n in range(7)]]


async def test_a_planning_that_fails_leaves_every_body_waiting_and_plans_each_once_after(
    database: Database,
) -> None:
    for n in range(3):
        await store_webhook(database, [inbox("32470000001", f"m{n}", webhook_id=f"m{n}")], 1.0)
    intake = Intake(database, CONFIG, time.time)
    async with database.transaction() as connection:  # the outbox cannot take the jobs
        await connection.execute(text("ALTER TABLE outbox RENAME TO outbox_away"))
    with pytest.raises(UNAVAILABLE):
        await intake.plan()
    async with database.transaction() as connection:
        assert await connection.scalar(select(func.count()).select_from(events)) == 0
        assert (await events_store.waiting_backlog(connection))[0] == 3
        await connection.execute(text("ALTER TABLE outbox_away RENAME TO outbox"))
    await plan_all(intake)
    assert list((await jobs_by_lane(database)).values()) == [["m0", "m1", "m2"]]


async def test_a_body_that_adds_nothing_is_deleted_and_the_rest_marked_planned(
    database: Database,
) -> None:
    event = inbox("32470000001", "hello", webhook_id="once")
    await store_webhook(database, [event], 1.0)
    await store_webhook(database, [event], 2.0)  # sent again before the first was planned
    await store_webhook(database, [], 3.0)  # an empty body is kept
    await plan_all(Intake(database, CONFIG, lambda: 50.0))
    async with database.transaction() as connection:
        query = select(webhook_requests.c.received_at, webhook_requests.c.planned_at)
        kept = (await connection.execute(query.order_by(webhook_requests.c.id))).all()
        assert await connection.scalar(select(func.count()).select_from(outbox)) == 1
    assert [tuple(row) for row in kept] == [(1.0, 50.0), (3.0, 50.0)]


@pytest.mark.postgres
async def test_two_intakes_at_once_plan_each_body_once_and_in_order(postgres_url: str) -> None:
    """Several workers each plan before their claims: one plans at a time (an advisory lock),
    the other then finds the bodies planned."""
    url = normalise_database_url(postgres_url)
    first, second = Database(url), Database(url)
    await migrate(first)
    try:
        for n in range(40):
            sender = f"3247000000{n % 4}"
            await store_webhook(first, [inbox(sender, f"m{n}", webhook_id=f"m{n:02d}")], 1.0)
        intakes = [Intake(database, CONFIG, time.time) for database in (first, second)]
        await asyncio.gather(*(plan_all(intake) for intake in intakes))
        lanes = await jobs_by_lane(first)
    finally:
        await first.close()
        await second.close()
    assert sum(len(ids) for ids in lanes.values()) == 40
    for ids in lanes.values():
        assert ids == sorted(ids)  # each conversation in the order its messages arrived


def test_doctor_says_when_bodies_wait_for_a_worker_and_what_to_do() -> None:
    assert intake_finding(0, None, 100.0).status == Status.OK
    assert intake_finding(3, 90.0, 100.0).status == Status.OK  # a worker is on it
    late = intake_finding(3, 10.0, 100.0)
    assert late.status == Status.PROBLEM
    assert "3 webhook bodies wait to be planned, the oldest for 90 s" in late.what
    assert late.fix is not None and "smsbridge worker" in late.fix


async def test_retention_keeps_a_body_not_planned_yet_whatever_its_age(
    database: Database,
) -> None:
    from bridge.ops import retention

    config = load(None, {})
    await store_webhook(database, [inbox("32470000001", "old", webhook_id="old")], 1.0)
    await store_webhook(database, [inbox("32470000002", "older", webhook_id="older")], 2.0)
    await Intake(database, config, lambda: 3.0).plan()  # both planned
    await store_webhook(database, [inbox("32470000003", "waits", webhook_id="waits")], 4.0)
    far_later = 4.0 + config.retention.raw_bodies + 10
    await retention.prune(database, config, far_later)
    async with database.transaction() as connection:
        left: Any = (await connection.execute(select(webhook_requests.c.received_at))).all()
    assert [row[0] for row in left] == [4.0]
