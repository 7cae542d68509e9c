"""The webhook edge and the intake after it: store first, deduplicate, keep what is not
understood, clear errors."""

from __future__ import annotations

import io
import json
import logging
import socket
import sqlite3
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select
from starlette.applications import Starlette
from starlette.routing import Route

from bridge.app import WEBHOOK_PATH
from bridge.chat.console import ConsoleAdapter
from bridge.config import load
from bridge.http.edge import MAX_BODY
from bridge.http.webhook import MAX_EVENTS, WebhookAuth, WebhookReceiver, group_commit
from bridge.settings import normalise_database_url
from bridge.store import events as events_store
from bridge.store.db import Database
from bridge.store.migrations import migrate
from bridge.store.schema import events, outbox, webhook_requests
from testkit.processes import free_port
from tests.conftest import sample
from tests.support.harness import TOKEN, running_bridge

CONFIG = load(None, {})


def console() -> dict[str, ConsoleAdapter]:
    return {"console": ConsoleAdapter("console", io.StringIO())}


async def unplanned(database_url: str) -> int:
    """Bodies stored that the intake has not planned yet."""
    database = Database(normalise_database_url(database_url))
    try:
        async with database.transaction() as connection:
            return (await events_store.waiting_backlog(connection))[0]
    finally:
        await database.close()


async def problems(database_url: str) -> list[str]:
    """Why each event stored but not understood was not, in the order they arrived."""
    database = Database(normalise_database_url(database_url))
    try:
        async with database.transaction() as connection:
            query = select(events.c.problem).where(events.c.status == "unparsed")
            return [row[0] for row in await connection.execute(query.order_by(events.c.id))]
    finally:
        await database.close()


async def count(database_url: str, table: object) -> int:
    database = Database(normalise_database_url(database_url))
    try:
        async with database.transaction() as connection:
            return int(
                (await connection.execute(select(func.count()).select_from(table))).scalar_one()
            )  # type: ignore[arg-type]
    finally:
        await database.close()


async def test_a_body_is_answered_once_stored_and_its_events_planned_by_the_intake(
    database_url: str,
) -> None:
    body = sample("inbox_message") + sample("delivery_report_failed") + sample("read_report")
    async with running_bridge(database_url, CONFIG, console(), run_worker=False) as bridge:
        response = await bridge.post(body)
        assert response.status_code == 200
        assert response.json() == {"received": 3}
        # Committed before the answer: another connection sees the body, waiting.
        assert await count(database_url, webhook_requests) == 1
        assert await unplanned(database_url) == 1
        assert await count(database_url, events) == 0
        await bridge.plan()
        assert await unplanned(database_url) == 0
        assert await count(database_url, webhook_requests) == 1
        assert await count(database_url, events) == 3
        assert await count(database_url, outbox) == 1  # the inbox message, to the console


async def test_the_same_event_twice_is_stored_and_planned_once(database_url: str) -> None:
    async with running_bridge(database_url, CONFIG, console(), run_worker=False) as bridge:
        first = await bridge.post(sample("inbox_message"))
        await bridge.plan()
        again = await bridge.post(sample("inbox_message") + sample("inbox_message"))
        await bridge.plan()
    assert (first.json(), again.json()) == ({"received": 1}, {"received": 2})
    assert await count(database_url, events) == 1
    assert await count(database_url, outbox) == 1
    assert await count(database_url, webhook_requests) == 1  # the resend added nothing


async def test_events_not_understood_are_kept_counted_and_the_rest_go_on(
    database_url: str,
) -> None:
    body = [
        {"webhook_id": "wh_x", "webhook_type": "add_contact", "message": {}},
        {"webhook_id": "wh_y", "webhook_type": "inbox_message", "message": {"sender": "1"}},
        "not an object",
        *sample("inbox_message"),
    ]
    async with running_bridge(database_url, CONFIG, console(), run_worker=False) as bridge:
        response = await bridge.post(body)
        await bridge.plan()
    assert (response.status_code, response.json()) == (200, {"received": 4})
    found = await problems(database_url)
    assert len(found) == 3
    assert "add_contact" in found[0] and "message.receiver" in found[1]
    assert await count(database_url, events) == 4
    assert await count(database_url, outbox) == 1


async def test_a_single_event_object_is_accepted_whatever_the_content_type(
    sqlite_url: str,
) -> None:
    (event,) = sample("inbox_message")
    async with running_bridge(sqlite_url, CONFIG, console(), run_worker=False) as bridge:
        response = await bridge.client.post(
            f"/webhooks/smstools/{TOKEN}",
            content=json.dumps(event),
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
    assert response.json() == {"received": 1}


async def test_a_wrong_token_gets_404_and_nothing_is_stored(sqlite_url: str) -> None:
    async with running_bridge(sqlite_url, CONFIG, console(), run_worker=False) as bridge:
        response = await bridge.post(sample("inbox_message"), token="wrong")
    assert response.status_code == 404
    assert response.json() == {"error": "not found"}
    assert await count(sqlite_url, webhook_requests) == 0


async def test_bodies_that_are_not_json_get_a_json_400_naming_the_problem(
    sqlite_url: str,
) -> None:
    url = f"/webhooks/smstools/{TOKEN}"
    async with running_bridge(sqlite_url, CONFIG, console(), run_worker=False) as bridge:
        not_json = await bridge.client.post(url, content=b"webhook_id=1")
        bad_utf8 = await bridge.client.post(url, content=b'[{"a": "\xff\xfe"}]')
        scalar = await bridge.client.post(url, content=b"42")
        empty = await bridge.client.post(url, content=b"")
        deep = await bridge.client.post(url, content=b"[" * 100_000 + b"]" * 100_000)
    assert not_json.status_code == 400 and "not valid JSON" in not_json.json()["error"]
    assert bad_utf8.status_code == 400 and "UTF-8" in bad_utf8.json()["error"]
    assert scalar.status_code == 400 and "JSON array" in scalar.json()["error"]
    assert empty.status_code == 400 and "empty body" in empty.json()["error"]
    assert deep.status_code == 400 and "nested" in deep.json()["error"]
    assert await count(sqlite_url, webhook_requests) == 0


async def test_bodies_over_one_mebibyte_get_413(sqlite_url: str) -> None:
    url = f"/webhooks/smstools/{TOKEN}"
    too_big = b"[" + b" " * MAX_BODY + b"]"

    async def chunks() -> object:
        for start in range(0, len(too_big), 65536):
            yield too_big[start : start + 65536]

    async with running_bridge(sqlite_url, CONFIG, console(), run_worker=False) as bridge:
        declared = await bridge.client.post(url, content=too_big)
        streamed = await bridge.client.post(url, content=chunks())  # type: ignore[arg-type]
    assert declared.status_code == 413 and "larger than" in declared.json()["error"]
    assert streamed.status_code == 413
    assert await count(sqlite_url, webhook_requests) == 0


async def test_unknown_paths_and_methods_get_json_errors(sqlite_url: str) -> None:
    async with running_bridge(sqlite_url, CONFIG, console(), run_worker=False) as bridge:
        missing = await bridge.client.get("/nope")
        wrong_method = await bridge.client.get(f"/webhooks/smstools/{TOKEN}")
        health = await bridge.client.get("/healthz")
    assert missing.status_code == 404 and missing.json() == {"error": "Not Found"}
    assert wrong_method.status_code == 405
    assert health.status_code == 200


async def test_without_a_token_one_is_generated_kept_and_announced_once(
    sqlite_url: str,
) -> None:
    env = {"SMSTOOLS_WEBHOOK_TOKEN": ""}
    async with running_bridge(sqlite_url, CONFIG, console(), run_worker=False, env=env) as first:
        (line,) = first.announced
    async with running_bridge(sqlite_url, CONFIG, console(), run_worker=False, env=env) as again:
        assert again.announced == []  # printed when made, not at every start
        token = line.rsplit("/", 1)[1]
        assert len(token) >= 40
        assert (await again.post(sample("inbox_message"), token=token)).status_code == 200
        assert (await again.post(sample("inbox_message"), token=TOKEN)).status_code == 404


async def test_the_client_never_sees_a_2xx_for_a_body_that_was_not_stored(
    sqlite_url: str,
) -> None:
    """Without its tables the store fails: the answer is 503 with Retry-After, not 2xx."""
    async with running_bridge(sqlite_url, CONFIG, console(), run_worker=False) as bridge:
        database = Database(normalise_database_url(sqlite_url))
        async with database.transaction() as connection:
            await connection.exec_driver_sql("DROP TABLE webhook_requests")
        await database.close()
        response = await bridge.post(sample("inbox_message"))
    assert response.status_code == 503
    assert response.headers["retry-after"] == "5"
    assert isinstance(response, httpx.Response)


async def test_out_of_range_codes_and_overlong_fields_cost_only_their_own_event(
    database_url: str,
) -> None:
    """Values no column can hold never refuse a body: an odd code is absent (the report goes
    on), an overlong id or number leaves only its own event not understood."""
    report = {"messageid": "m1", "sender": "32460200000", "receiver": "32470123456"}
    body = [
        {
            "webhook_id": "big-code",
            "webhook_type": "delivery_report",
            "message": {**report, "delivery_code": "3000000000"},
        },
        {
            "webhook_id": "huge-detail",
            "webhook_type": "delivery_report",
            "message": {**report, "delivery_code": "5", "delivery_code_detail": "9" * 20},
        },
        {
            "webhook_id": "long-id",
            "webhook_type": "read_report",
            "message": {**report, "messageid": "m" * 4000},
        },
        {
            "webhook_id": "long-sender",
            "webhook_type": "inbox_message",
            "message": {"sender": "3" * 4000, "receiver": "32460200000", "content": "hi"},
        },
        *sample("inbox_message"),
    ]
    async with running_bridge(database_url, CONFIG, console(), run_worker=False) as bridge:
        response = await bridge.post(body)
        await bridge.plan()
    assert response.status_code == 200
    assert len(await problems(database_url)) == 2
    assert await count(database_url, events) == 5


async def test_a_body_of_more_than_max_events_gets_413_before_anything_is_stored(
    sqlite_url: str,
) -> None:
    too_many = [{"webhook_id": f"wh_{number}"} for number in range(MAX_EVENTS + 1)]
    async with running_bridge(sqlite_url, CONFIG, console(), run_worker=False) as bridge:
        refused = await bridge.post(too_many)
        at_limit = await bridge.post(too_many[:MAX_EVENTS])
    assert refused.status_code == 413
    assert f"at most {MAX_EVENTS}" in refused.json()["error"]
    assert at_limit.status_code == 200 and at_limit.json() == {"received": MAX_EVENTS}
    assert await count(sqlite_url, webhook_requests) == 1  # the one at the limit


async def test_thousands_of_bad_items_are_each_kept_and_counted(sqlite_url: str) -> None:
    async with running_bridge(sqlite_url, CONFIG, console(), run_worker=False) as bridge:
        response = await bridge.post([{}] * 5000)
        await bridge.plan()
    assert response.status_code == 200 and response.json() == {"received": 5000}
    assert await count(sqlite_url, events) == 5000  # each kept and counted all the same
    assert len(await problems(sqlite_url)) == 5000


async def test_a_body_made_only_of_duplicates_is_not_stored_again(database_url: str) -> None:
    body = sample("inbox_message") + sample("read_report")
    async with running_bridge(database_url, CONFIG, console(), run_worker=False) as bridge:
        first = await bridge.post(body)
        again = await bridge.post(body)
        partly_new = await bridge.post(body + [{"webhook_type": "unknown"}])
        await bridge.plan()
    assert [r.status_code for r in (first, again, partly_new)] == [200, 200, 200]
    assert len(await problems(database_url)) == 1
    assert await count(database_url, events) == 3
    assert await count(database_url, webhook_requests) == 2  # the first, and the partly new


# -- the database failing under the webhook ---------------------------------------------------


@asynccontextmanager
async def edge_on(database: Database) -> AsyncIterator[httpx.AsyncClient]:
    """The webhook receiver alone, on a database that may not work (no start-up migration)."""
    receiver = WebhookReceiver(
        group_commit(database),
        WebhookAuth(TOKEN),
        time.time,
        lambda: None,
    )
    app = Starlette(routes=[Route(WEBHOOK_PATH, receiver, methods=["POST"])])
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://bridge") as client:
            yield client
    finally:
        await receiver.commits.close()
        await database.close()


def assert_503_logged_once(response: httpx.Response, caplog: pytest.LogCaptureFixture) -> str:
    assert response.status_code == 503
    assert response.headers["retry-after"] == "5"
    assert "send it again" in response.json()["error"]
    (record,) = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert record.name == "bridge.http.webhook" and record.exc_info is None
    message = record.getMessage()
    assert "could not store a webhook body" in message and "\n" not in message
    assert "Hello, my parcel" not in message and "[parameters" not in message
    return message


async def test_postgresql_refusing_connections_is_503_with_retry_after(
    caplog: pytest.LogCaptureFixture,
) -> None:
    closed = free_port()  # nothing listens there
    database = Database(f"postgresql+asyncpg://bridge@127.0.0.1:{closed}/bridge", timeout=2)
    async with edge_on(database) as client:
        response = await client.post(f"/webhooks/smstools/{TOKEN}", json=sample("inbox_message"))
    assert "ConnectionRefusedError" in assert_503_logged_once(response, caplog)


async def test_postgresql_that_never_answers_is_503_after_the_timeout(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with socket.socket() as silent:  # accepts connections, never says a word
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        database = Database(f"postgresql+asyncpg://bridge@127.0.0.1:{port}/bridge", timeout=0.5)
        async with edge_on(database) as client:
            started = time.monotonic()
            response = await client.post(
                f"/webhooks/smstools/{TOKEN}", json=sample("inbox_message")
            )
            waited = time.monotonic() - started
    assert "TimeoutError" in assert_503_logged_once(response, caplog)
    assert 0.5 <= waited < 5


async def test_a_locked_sqlite_database_is_503_then_stores_once_free(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "bridge.db"
    url = normalise_database_url(f"sqlite:///{path}")
    setup = Database(url)
    await migrate(setup)
    await setup.close()
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another process holding the write lock
    try:
        async with edge_on(Database(url, timeout=0.2)) as client:
            locked = await client.post(f"/webhooks/smstools/{TOKEN}", json=sample("inbox_message"))
            assert "database is locked" in assert_503_logged_once(locked, caplog)
            holder.execute("ROLLBACK")
            free = await client.post(f"/webhooks/smstools/{TOKEN}", json=sample("inbox_message"))
    finally:
        holder.close()
    assert free.status_code == 200 and free.json() == {"received": 1}


def _inbox(webhook_id: str) -> list[dict[str, object]]:
    (event,) = sample("inbox_message")
    return [{**event, "webhook_id": webhook_id}]


@pytest.mark.postgres
async def test_connections_the_server_dropped_cost_at_most_one_503_and_nothing_is_lost(
    postgres_url: str,
) -> None:
    """Connections are not pinged before use: one the server dropped fails its first use, and
    that invalidates the pool. The webhook that found it is answered 503 (and sent again);
    the ones after it are stored on fresh connections."""
    async with running_bridge(postgres_url, CONFIG, console(), run_worker=False) as bridge:
        assert (await bridge.post(_inbox("wh_before"))).status_code == 200
        admin = Database(normalise_database_url(postgres_url))
        try:
            async with admin.transaction() as connection:
                dropped = await connection.exec_driver_sql(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
                assert dropped.scalar_one() >= 1
        finally:
            await admin.close()
        statuses = []
        for _attempt in range(3):
            statuses.append((await bridge.post(_inbox("wh_after"))).status_code)
            if statuses[-1] == 200:
                break
        later = [(await bridge.post(_inbox(f"wh_later_{n}"))).status_code for n in range(3)]
        await bridge.plan()
    assert statuses in ([200], [503, 200])
    assert later == [200, 200, 200]
    assert await count(postgres_url, events) == 5
    assert await count(postgres_url, outbox) == 5
