"""The storage contract, run against SQLite and PostgreSQL alike."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import pytest
from sqlalchemy import Text, bindparam, event, func, select, text

from bridge.jobs import AlertJob, ConversationKey, InboxJob, Job, NoticeJob, ReadJob
from bridge.settings import normalise_database_url
from bridge.store import events as events_store
from bridge.store import facts, group_writes
from bridge.store import outbox as outbox_store
from bridge.store import schema as tables
from bridge.store.db import Database, one_of, relax_commits
from bridge.store.events import StoredEvent
from bridge.store.migrations import LATEST, STEPS, SchemaTooNew, migrate, pending
from bridge.store.schema import outbox
from tests.support.spies import statements_on_asyncpg, statements_through_sqlalchemy


async def test_migrate_is_idempotent_and_records_the_version(database: Database) -> None:
    assert await migrate(database) == (LATEST, LATEST)
    assert await pending(database) == 0


async def test_a_database_newer_than_the_code_is_refused(database: Database) -> None:
    async with database.transaction() as connection:
        await connection.execute(text(f"INSERT INTO schema_version VALUES ({LATEST + 1})"))
    with pytest.raises(SchemaTooNew, match="newer than this smsbridge"):
        await migrate(database)


async def test_concurrent_migrations_take_turns(database_url: str) -> None:
    databases = [Database(normalise_database_url(database_url)) for _ in range(3)]
    try:
        results = await asyncio.gather(*(migrate(db) for db in databases))
    finally:
        for db in databases:
            await db.close()
    assert sorted(before for before, _ in results) == [0, LATEST, LATEST]


def _new(webhook_id: str | None, body: int = 0) -> group_writes.NewEvent:
    return group_writes.NewEvent(body, webhook_id, "inbox_message", "ok", None, "{}", 1.0)


async def _bodies(connection: Any, *raws: bytes) -> list[int]:
    """Bodies as the request path stores them, waiting for the intake; their ids."""
    insert = tables.webhook_requests.insert().returning(tables.webhook_requests.c.id)
    return [
        (await connection.execute(insert, {"received_at": 1.0, "body": raw})).scalar_one()
        for raw in raws
    ]


async def _events(database: Database, *webhook_ids: str | None) -> dict[str, int]:
    async with database.transaction() as connection:
        (body_id,) = await _bodies(connection, b"[]")
        body = group_writes.PlannedBody(body_id, len(webhook_ids))
        new = [_new(webhook_id) for webhook_id in webhook_ids]
        return await group_writes.write(
            database, connection, group_writes.GroupWrite([body], new, []), 2.0
        )


async def _count_events(database: Database) -> int:
    async with database.transaction() as connection:
        return int(
            (await connection.execute(select(func.count()).select_from(tables.events))).scalar_one()
        )


async def test_an_event_id_seen_before_is_not_stored_twice(database: Database) -> None:
    first = await _events(database, "wh_1", "wh_2")
    assert set(first) == {"wh_1", "wh_2"}
    assert set(await _events(database, "wh_1", "wh_3")) == {"wh_3"}
    assert await _events(database, None, None) == {}
    assert await _count_events(database) == 5  # events without an id are all kept


async def test_an_event_repeated_in_one_bulk_insert_is_stored_once(database: Database) -> None:
    stored = await _events(database, "wh_1", "wh_1", "wh_2", "wh_1")
    assert set(stored) == {"wh_1", "wh_2"}
    assert await _count_events(database) == 2


async def test_thousands_of_events_go_in_one_call(database: Database) -> None:
    ids = [f"wh_{number}" for number in range(12_000)]
    stored = await _events(database, *ids)
    assert len(stored) == 12_000 and len(set(stored.values())) == 12_000
    assert await _events(database, *ids[::2]) == {}


async def _enqueue(
    database: Database, event_id: int, customer: str, destination: str = "d"
) -> None:
    """An inbox job for `customer`'s conversation (its lane) on line L."""
    payload = InboxJob(conversation=ConversationKey(receiver="L", sender=customer))
    async with database.transaction() as connection:
        await outbox_store.enqueue(
            database,
            connection,
            event_id=event_id,
            destination=destination,
            payload=payload,
            now=10.0,
        )


async def _claim(
    database: Database, now: float = 10.0, worker: str = "w1", paused: tuple[str, ...] = ()
) -> list[Job]:
    async with database.transaction() as connection:
        claimed = await outbox_store.claim(
            database,
            connection,
            worker=worker,
            now=now,
            lease=30.0,
            limit=100,
            paused=paused,
        )
    return [job for job, _ in claimed]


async def test_only_the_head_of_each_lane_is_claimed(database: Database) -> None:
    for event_id, lane in [(1, "a"), (2, "a"), (3, "b"), (4, "a"), (5, "b")]:
        await _enqueue(database, event_id, lane)
    first = await _claim(database)
    assert [(job.event_id, job.lane) for job in first] == [(1, "d|L|a"), (3, "d|L|b")]
    assert await _claim(database) == []  # heads are leased, the rest wait behind them
    await database.shared.write(outbox_store.finish([first[0].id], 11.0))
    assert [job.event_id for job in await _claim(database)] == [2]


async def test_a_claim_brings_each_heads_event_in_the_statements_that_lease_them(
    database: Database, trips: list[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    stored = await _events(database, "wh_1", "wh_2")
    await _enqueue(database, stored["wh_1"], "a")
    await _enqueue(database, stored["wh_2"], "b")
    await _enqueue(database, 999, "c")  # its event is gone
    statements = statements_through_sqlalchemy(database)
    postgresql = database.dialect == "postgresql"
    on_asyncpg = statements_on_asyncpg(database, monkeypatch) if postgresql else []
    async with database.transaction() as connection:
        before = len(trips)
        claimed = await outbox_store.claim(
            database, connection, worker="w", now=10.0, lease=30.0, limit=10
        )
        claim_trips = len(trips) - before
    events = {job.event_id: found for job, found in claimed}
    assert events == {
        stored["wh_1"]: StoredEvent(stored["wh_1"], "{}", 1.0),
        stored["wh_2"]: StoredEvent(stored["wh_2"], "{}", 1.0),
        999: None,
    }
    # PostgreSQL picks and leases in one round trip, on asyncpg past SQLAlchemy. SQLite admits
    # the jobs stored since the last claim to their lanes, and its RETURNING cannot say who
    # held a lease before, so it asks first: three statements, in one trip to the driver's
    # thread past SQLAlchemy.
    if postgresql:
        assert (len(statements), len(on_asyncpg)) == (0, 1)
    else:
        assert (len(statements), claim_trips) == (0, 1)


async def test_jobs_admitted_a_few_at_a_time_still_go_out_in_order_in_each_lane(
    database: Database,
) -> None:
    """On SQLite claims admit the oldest jobs to their lanes' index, a few at most: a lane's
    later job is never a head while an earlier one waits outside the index."""
    for event_id, lane in [(1, "a"), (2, "b"), (3, "a"), (4, "c"), (5, "a"), (6, "c")]:
        await _enqueue(database, event_id, lane)

    async def claim_admitting_two() -> list[int | None]:
        async with database.transaction() as connection:
            claimed = await outbox_store.claim(
                database, connection, worker="w", now=10.0, lease=30.0, limit=100, admit=2
            )
        await database.shared.write(outbox_store.finish([job.id for job, _ in claimed], 11.0))
        return [job.event_id for job, _ in claimed]

    rounds = [await claim_admitting_two() for _ in range(4)]
    if database.dialect == "sqlite":
        assert rounds == [[1, 2], [3, 4], [5, 6], []]
    else:  # stored admitted: every head at once
        assert rounds == [[1, 2, 4], [3, 6], [5], []]


async def test_the_same_job_is_enqueued_once(database: Database) -> None:
    await _enqueue(database, 1, "a")
    await _enqueue(database, 1, "a")
    assert len(await _claim(database)) == 1


async def test_an_expired_lease_is_claimed_again(database: Database) -> None:
    await _enqueue(database, 1, "a")
    assert len(await _claim(database, now=10.0)) == 1
    assert await _claim(database, now=39.0, worker="w2") == []
    again = await _claim(database, now=41.0, worker="w2")
    assert [job.event_id for job in again] == [1]


async def test_a_job_retried_later_blocks_its_lane_until_due(database: Database) -> None:
    await _enqueue(database, 1, "a")
    await _enqueue(database, 2, "a")
    (job,) = await _claim(database)
    async with database.transaction() as connection:
        await outbox_store.retry_later(connection, job.id, at=100.0, error="server: 503")
    assert await _claim(database, now=50.0) == []
    due = await _claim(database, now=100.0)
    assert [(j.event_id, j.attempts, j.last_error) for j in due] == [(1, 1, "server: 503")]


async def test_paused_destinations_are_skipped(database: Database) -> None:
    await _enqueue(database, 1, "a", destination="slow")
    await _enqueue(database, 2, "b", destination="fast")
    assert [job.destination for job in await _claim(database, paused=("slow",))] == ["fast"]


async def test_dead_letters_do_not_block_their_lane_and_can_be_requeued(
    database: Database,
) -> None:
    await _enqueue(database, 1, "a")
    await _enqueue(database, 2, "a")
    (job,) = await _claim(database)
    async with database.transaction() as connection:
        await outbox_store.bury(connection, job.id, error="not_found: channel", now=11.0)
    assert [j.event_id for j in await _claim(database)] == [2]
    async with database.transaction() as connection:
        (dead,) = await outbox_store.dead(connection)
        assert dead.last_error == "not_found: channel"
        assert await outbox_store.requeue(connection, None, now=20.0) == 1
        pending = select(func.count()).where(outbox.c.status == "pending")
        assert (await connection.execute(pending)).scalar() == 2


async def test_released_jobs_are_claimable_at_once(database: Database) -> None:
    await _enqueue(database, 1, "a")
    (job,) = await _claim(database)
    async with database.transaction() as connection:
        await outbox_store.release(connection, [job.id])
    assert len(await _claim(database, worker="w2")) == 1


async def test_parallel_claimers_never_get_the_same_job(database_url: str) -> None:
    databases = [Database(normalise_database_url(database_url)) for _ in range(4)]
    try:
        await migrate(databases[0])
        for event_id in range(200):
            await _enqueue(databases[0], event_id, f"lane-{event_id % 40}")
        claimed: list[int] = []
        while True:
            rounds = await asyncio.gather(
                *(_claim(db, worker=f"w{i}") for i, db in enumerate(databases))
            )
            batch = [job for jobs in rounds for job in jobs]
            if not batch:
                break
            claimed += [job.id for job in batch]
            await databases[0].shared.write(outbox_store.finish([job.id for job in batch], 11.0))
    finally:
        for db in databases:
            await db.close()
    assert len(claimed) == len(set(claimed)) == 200


async def test_the_first_stored_fact_wins(database: Database) -> None:
    async with database.transaction() as connection:
        assert await facts.get(connection, "k") is None
        assert await facts.add(database, connection, "k", "one") is True
        assert await facts.add(database, connection, "k", "two") is False
        assert await facts.get(connection, "k") == "one"


async def test_releasing_every_lease_makes_all_pending_jobs_claimable(database: Database) -> None:
    await _enqueue(database, 1, "a")
    await _enqueue(database, 2, "b")
    assert len(await _claim(database, worker="dead")) == 2
    async with database.transaction() as connection:
        await outbox_store.release(connection, None)
    assert len(await _claim(database, worker="alive")) == 2


async def test_jobs_queued_by_an_older_bridge_get_typed_payloads(database_url: str) -> None:
    database = Database(normalise_database_url(database_url))
    try:
        await migrate(database, target=3)
        lane = "support|32460200000|32470123456"
        old_jobs = [
            (1, None, "support", lane, "inbox", None),
            (2, 10, "support", lane, "failure_note", None),
            (3, 11, "support", "support|read|m-1", "read", None),
            (4, 10, "oncall", "alert|7|oncall", "alert", None),
            (5, None, "oncall", "notice|support|auth|oncall", "notice", NOTICE_V3),
        ]
        async with database.transaction() as connection:
            await connection.execute(
                text(
                    "INSERT INTO events (id, request_id, webhook_id, status, payload, "
                    "received_at) VALUES (11, 1, 'w11', 'ok', :payload, 1)"
                ),
                {"payload": '{"message": {"messageid": "m-1"}}'},
            )
            await connection.execute(
                text(
                    "INSERT INTO conversations (id, destination, receiver, sender, thread, "
                    "started_at, last_message_at) VALUES "
                    "(3, 'support', '32460200000', '32470123456', '1.0', 1, 1)"
                )
            )
            for job in old_jobs:
                await connection.execute(
                    text(
                        "INSERT INTO outbox (id, event_id, destination, lane, kind, status, "
                        "attempts, next_attempt_at, created_at, payload) VALUES "
                        "(:i, :e, :d, :l, :k, 'pending', 0, 1, 1, :p)"
                    ),
                    dict(zip("iedlkp", job, strict=True)),
                )
        await migrate(database)
        async with database.transaction() as connection:
            claimed = await outbox_store.claim(
                database, connection, worker="w", now=2.0, lease=30.0, limit=10
            )
            jobs = [job for job, _ in claimed]
            note = select(outbox.c.payload).where(outbox.c.id == 2)
            (stored,) = (await connection.execute(note)).one()
    finally:
        await database.close()
    conversation = ConversationKey(receiver="32460200000", sender="32470123456")
    assert {job.id: job.payload for job in jobs} == {
        1: InboxJob(conversation=conversation),
        3: ReadJob(messageid="m-1"),
        4: AlertJob(group_id=7),
        5: NoticeJob(failing="support", reason="auth", detail="token revoked"),
    }  # the failure note waits behind the inbox job of its lane
    assert stored == {"conversation": conversation.model_dump(), "conversation_id": 3}


def _step_of(sql: str) -> int:
    """The number of the schema step with a statement holding `sql`."""
    return next(
        number
        for number, step in enumerate(STEPS, start=1)
        if any(isinstance(statement, str) and sql in statement for statement in step)
    )


NOTICE_V3 = '{"destination": "support", "reason": "auth", "detail": "token revoked"}'


async def test_a_dead_letter_an_older_bridge_left_without_its_time_is_still_listed(
    database_url: str,
) -> None:
    """Only finished jobs with a finish time are indexed now (`outbox_finished`), and dead
    letters are found through that index: one without a time gets its creation's."""
    database = Database(normalise_database_url(database_url))
    try:
        await migrate(database, target=_step_of("WHERE finished_at IS NOT NULL") - 1)
        async with database.transaction() as connection:
            await connection.execute(
                text(
                    "INSERT INTO outbox (id, destination, lane, kind, status, attempts, "
                    "next_attempt_at, created_at, payload) VALUES (1, 'support', "
                    "'notice|support|auth|oncall', 'notice', 'dead', 8, 5, 5, :payload)"
                ),
                {"payload": NOTICE_V3},
            )
        await migrate(database)
        async with database.transaction() as connection:
            count = await outbox_store.dead_count(connection)
            listed = [job.id for job in await outbox_store.dead(connection)]
            finished = (await connection.execute(select(outbox.c.finished_at))).scalar_one()
    finally:
        await database.close()
    assert (count, listed, finished) == (1, [1], 5.0)


async def test_each_event_of_a_group_points_at_its_own_raw_body(database: Database) -> None:
    new = [_new(f"wh_{number}", body=number) for number in range(50)]
    async with database.transaction() as connection:
        ids = await _bodies(connection, *(f"[{number}]".encode() for number in range(50)))
        bodies = [group_writes.PlannedBody(body_id, 1) for body_id in ids]
        await group_writes.write(
            database, connection, group_writes.GroupWrite(bodies, new, []), 2.0
        )
        rows = await connection.execute(
            select(tables.events.c.webhook_id, tables.webhook_requests.c.body).join(
                tables.webhook_requests,
                tables.webhook_requests.c.id == tables.events.c.request_id,
            )
        )
        stored = dict(rows.all())
    assert stored == {f"wh_{number}": f"[{number}]".encode() for number in range(50)}


async def test_a_group_adds_jobs_only_for_events_stored_now_in_the_order_given(
    database: Database,
) -> None:
    """A resent event plans nothing again, a body of resends is deleted, the others are
    marked planned, and job ids (the order within a lane) follow the order given."""
    await _events(database, "wh_old")
    conversation = ConversationKey(receiver="32460200000", sender="32470123456")
    payload = InboxJob(conversation=conversation)
    order = ["wh_3", "wh_old", "wh_1", "wh_2", "wh_1"]
    new = [_new(webhook_id) for webhook_id in order[:4]] + [_new("wh_old", body=1)]
    jobs = [group_writes.NewEventJob(webhook_id, "support", payload, 2.0) for webhook_id in order]
    async with database.transaction() as connection:
        fresh, resent = await _bodies(connection, b"[new]", b"[resent]")
        bodies = [group_writes.PlannedBody(fresh, 4), group_writes.PlannedBody(resent, 1)]
        stored = await group_writes.write(
            database, connection, group_writes.GroupWrite(bodies, new, jobs), 5.0
        )
        planned = await connection.execute(
            select(outbox.c.event_id, outbox.c.lane, outbox.c.created_at).order_by(outbox.c.id)
        )
        kept = await connection.execute(
            select(tables.webhook_requests.c.body, tables.webhook_requests.c.planned_at)
        )
        assert planned.all() == [
            (stored["wh_3"], "support|32460200000|32470123456", 2.0),
            (stored["wh_1"], "support|32460200000|32470123456", 2.0),
            (stored["wh_2"], "support|32460200000|32470123456", 2.0),
        ]
        assert sorted(tuple(row) for row in kept) == [(b"[]", 2.0), (b"[new]", 5.0)]
    assert set(stored) == {"wh_1", "wh_2", "wh_3"}


def _arrived(*sizes: int) -> list[list[group_writes.NewBody]]:
    return [[group_writes.NewBody(b"[]", 1.0) for _ in range(size)] for size in sizes]


async def _waiting(database: Database) -> int:
    async with database.transaction() as connection:
        return (await events_store.waiting_backlog(connection))[0]


@pytest.mark.postgres
async def test_a_webhook_groups_statement_is_planned_once_per_connection_not_per_group(
    postgres_url: str,
) -> None:
    """PostgreSQL plans a prepared statement afresh at each run until a plan for any
    parameters (generic) looks no dearer: the group's write must get there (after the first
    five runs), whatever the groups' sizes, or its planning costs the server about as much as
    running it. A large group then still goes in whole on that plan."""
    database = Database(normalise_database_url(postgres_url))
    await migrate(database)
    try:
        async with database.autocommit() as connection:
            for bodies in _arrived(1, 5, 2, 8, 1, 3, 16, 1, 4, 2, 5_000):
                await group_writes.store(database, connection, bodies)
            plans = await connection.exec_driver_sql(
                "SELECT generic_plans, custom_plans FROM pg_prepared_statements "
                "WHERE statement = $1",
                (group_writes._STORE_POSTGRESQL,),
            )
            assert [tuple(row) for row in plans] == [(6, 5)]
    finally:
        await database.close()
    assert await _waiting(database) == 5_043


@pytest.mark.postgres
async def test_a_webhook_group_after_a_schema_change_is_stored_on_a_fresh_plan(
    postgres_url: str,
) -> None:
    """The group's write is prepared once per connection; a migration from another process
    changes the table under it: the next group is stored all the same, not answered 503."""
    database = Database(normalise_database_url(postgres_url))
    await migrate(database)
    try:
        async with database.autocommit() as connection:
            await group_writes.store(database, connection, *_arrived(1))
            other = await asyncpg.connect(postgres_url)
            try:
                await other.execute("ALTER TABLE webhook_requests ADD COLUMN later TEXT")
                await other.execute(
                    "ALTER TABLE webhook_requests ALTER COLUMN body SET STORAGE MAIN"
                )
            finally:
                await other.close()
            await group_writes.store(database, connection, *_arrived(2))
    finally:
        await database.close()
    assert await _waiting(database) == 3


@pytest.mark.postgres
async def test_postgresql_connections_are_kept_not_opened_per_checkout_under_load(
    postgres_url: str,
) -> None:
    """A worker runs 48 jobs at once: past the pool's size they wait for a connection, rather
    than each opening one that is closed again at its return (and prepares its statements
    anew)."""
    database = Database(normalise_database_url(postgres_url))
    opened: list[object] = []
    event.listen(database.engine.sync_engine, "connect", lambda *args: opened.append(args))

    async def short_transaction() -> None:
        async with database.transaction() as connection:
            await connection.execute(text("SELECT pg_sleep(0.01)"))

    try:
        for _ in range(3):
            await asyncio.gather(*(short_transaction() for _ in range(48)))
    finally:
        await database.close()
    assert len(opened) <= 15


@pytest.mark.postgres
@pytest.mark.parametrize("binding", ["prefer", "disable"])
async def test_a_url_whose_channel_binding_allows_none_reaches_postgresql_both_ways(
    postgres_url: str, binding: str
) -> None:
    """Neon-style URLs carry libpq's `channel_binding`, which asyncpg rejects as an argument
    and sends to the server as a setting: the pool and the session (LISTEN) connection both
    connect without it."""
    url = normalise_database_url(f"{postgres_url}?sslmode=disable&channel_binding={binding}")
    database = Database(url, direct_url=url)
    try:
        async with database.transaction() as connection:
            assert (await connection.execute(text("SELECT 1"))).scalar() == 1
        dsn, connect_args = database.session_dsn()
        session = await asyncpg.connect(dsn, **connect_args)
        try:
            assert await session.fetchval("SELECT 1") == 1
        finally:
            await session.close()
    finally:
        await database.close()


@pytest.mark.postgres
async def test_relaxed_transactions_on_postgresql_wait_for_no_wal_flush_and_others_do(
    postgres_url: str,
) -> None:
    """The worker's relaxed commits (`relax_commits`) are PostgreSQL's asynchronous commits,
    set in their transaction's BEGIN; the webhook path's, a reply's and statements committing
    alone keep waiting for the WAL flush."""
    database = Database(normalise_database_url(postgres_url))
    show = text("SHOW synchronous_commit")

    async def in_transaction() -> str:
        async with database.transaction() as connection:
            return str((await connection.execute(show)).scalar_one())

    async def alone() -> str:
        async with database.autocommit() as connection:
            return str((await connection.execute(show)).scalar_one())

    async def relaxed(undone: bool = False) -> tuple[str, str]:
        relax_commits()
        if undone:
            relax_commits(False)
        return await in_transaction(), await alone()

    try:
        assert await asyncio.create_task(relaxed()) == ("off", "on")
        assert await asyncio.create_task(relaxed(undone=True)) == ("on", "on")
        assert await in_transaction() == "on"  # this task's commits were never relaxed
    finally:
        await database.close()


@pytest.mark.postgres
@pytest.mark.parametrize("through", ["sqlalchemy", "asyncpg"])
async def test_a_transaction_cancelled_mid_statement_ends_cancelled_not_as_a_database_error(
    postgres_url: str, through: str
) -> None:
    """A shutdown cancels the worker's and the LISTEN's transactions wherever they are. The
    task must end cancelled: were the cancellation turned into a database error, a loop that
    outlives those (the LISTEN's reconnects) would go round again and the shutdown wait for
    it. The pool is fine afterwards."""
    database = Database(normalise_database_url(postgres_url))
    started = asyncio.Event()

    async def sleeping() -> None:
        async with database.transaction() as connection:
            started.set()
            if through == "sqlalchemy":
                await connection.execute(text("SELECT pg_sleep(5)"))
            else:
                await database.fetch_on_asyncpg(connection, "SELECT pg_sleep(5)")

    try:
        task = asyncio.create_task(sleeping())
        await started.wait()
        await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        async with database.transaction() as connection:
            assert (await connection.execute(text("SELECT 1"))).scalar() == 1
    finally:
        await database.close()


@pytest.mark.postgres
async def test_a_statement_run_past_sqlalchemy_must_take_a_list_as_one_parameter(
    postgres_url: str,
) -> None:
    """An expanding IN's SQL depends on how many values it gets: it cannot be compiled once
    and prepared, so `fetch_in` refuses it and says what to use instead."""
    database = Database(normalise_database_url(postgres_url))
    expanding = select(outbox.c.id).where(outbox.c.id.in_(bindparam("ids", expanding=True)))
    try:
        await migrate(database)
        async with database.transaction() as connection:
            with pytest.raises(ValueError, match="one_of"):
                await database.fetch_in(connection, expanding, {"ids": [1, 2]})
            listed = select(outbox.c.id).where(one_of("postgresql", outbox.c.id.cast(Text), "ids"))
            assert await database.fetch_in(connection, listed, {"ids": ["1", "2"]}) == []
    finally:
        await database.close()
