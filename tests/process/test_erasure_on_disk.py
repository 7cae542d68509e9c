"""Erased means gone from the disk: with the bridge running, after `smsbridge forget` and
after `smsbridge prune` the customer's number, their text and the agent's answer are in no
byte of SQLite's database, `-wal` and `-shm` files, nor in any page of PostgreSQL's tables,
their TOAST and their indexes. A reader that still sees the old copies is waited for, and
reported when it outlasts the attempts."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg
import httpx
import pytest
from sqlalchemy import func, select

from bridge.settings import normalise_database_url
from bridge.store import erasure
from bridge.store.db import Database
from bridge.store.disk import scrub
from bridge.store.migrations import migrate
from bridge.store.schema import facts, outbox
from testkit.fakes.slack import FakeSlack
from testkit.fakes.smstools import FakeSmstools
from testkit.fakes.telegram import FakeTelegram
from testkit.processes import BridgeProcess
from tests.support.reply_fixtures import SIGNING_SECRET, sign, slack_event
from tests.support.traffic import LINE_A, TOKEN, env_for
from tests.support.waiting import poll

CUSTOMER, SHOWN = "32470777007", "+32 470 77 70 07"
OTHER = "32470888008"
TEXT, ANSWER = "zebra-question-from-the-customer", "zebra-answer-from-the-agent"
NEEDLES = (CUSTOMER.encode(), TEXT.encode(), ANSWER.encode())

CONFIG = """
destinations:
  support: {slack: {channel: C0SUPPORT}, max_rate: unlimited, replies: true}
default: [support]
"""
# Everything outlives its retention a second later (the worker prunes only at start).
PRUNED_SOON = """
retention: {raw_bodies: 1s, content: 1s, done_jobs: 1s, dead_letters: 1s}
threads: {idle_after: 1s}
"""


def inbox(sender: str, content: str, n: int) -> dict[str, object]:
    # Ids as the gateway makes them: the number is not in them (ids are kept, for dedup).
    return {
        "webhook_id": f"wh_disk_{n}",
        "webhook_type": "inbox_message",
        "message": {
            "id": f"disk-{n}",
            "date": "2026-11-26 10:00:00",
            "sender": sender,
            "receiver": LINE_A,
            "content": content,
            "type": "sms",
        },
    }


async def _pending_jobs(database_url: str) -> int:
    database = Database(normalise_database_url(database_url))
    try:
        async with database.transaction() as connection:
            query = select(func.count()).select_from(outbox).where(outbox.c.status == "pending")
            return int((await connection.execute(query)).scalar_one())
    finally:
        await database.close()


def sqlite_files(database_url: str) -> dict[str, bytes]:
    """Every byte of the database file, its WAL and its shared-memory index, by file."""
    path = Path(database_url.removeprefix("sqlite:///"))
    files = [path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")]
    return {file.name: file.read_bytes() for file in files if file.exists()}


async def _postgresql_pages(database_url: str) -> dict[str, bytes]:
    """Every page of the bridge's tables, their TOAST tables and their indexes, as stored
    (`pageinspect`'s `get_raw_page`: from the shared buffers or the relation's file), by
    relation."""
    connection = await asyncpg.connect(database_url)
    try:
        await connection.execute("CREATE EXTENSION IF NOT EXISTS pageinspect")
        relations = await connection.fetch(
            """
            SELECT r.oid::regclass::text AS name,
                   pg_relation_size(r.oid) / current_setting('block_size')::int AS pages
            FROM pg_class c
            JOIN pg_namespace n ON n.oid = c.relnamespace
            JOIN pg_class r ON r.oid IN (c.oid, c.reltoastrelid)
            WHERE n.nspname = 'public' AND c.relkind IN ('r', 'i')
            """
        )
        pages: dict[str, bytes] = {}
        for relation in relations:
            for page in range(relation["pages"]):
                raw = await connection.fetchval(
                    "SELECT get_raw_page($1, $2)", relation["name"], page
                )
                pages[f"{relation['name']} page {page}"] = bytes(raw)
        return pages
    finally:
        await connection.close()


def found_on_disk(database_url: str) -> list[tuple[str, bytes]]:
    """(where, what) for every needle found in the database's files or pages."""
    if database_url.startswith("sqlite"):
        stored = sqlite_files(database_url)
    else:
        stored = asyncio.run(_postgresql_pages(database_url))
    return [
        (where, needle) for where, data in stored.items() for needle in NEEDLES if needle in data
    ]


@pytest.fixture
def fakes() -> Iterator[tuple[FakeSlack, FakeTelegram, FakeSmstools]]:
    with FakeSlack() as slack, FakeTelegram() as telegram, FakeSmstools() as smstools:
        yield slack, telegram, smstools


@pytest.mark.slow
@pytest.mark.parametrize("command", ["forget", "prune"])
def test_what_was_erased_is_on_no_page_of_the_disk(
    tmp_path: Path,
    database_url: str,
    fakes: tuple[FakeSlack, FakeTelegram, FakeSmstools],
    command: str,
) -> None:
    slack, telegram, smstools = fakes
    config = tmp_path / "bridge.yaml"
    config.write_text(CONFIG + (PRUNED_SOON if command == "prune" else ""))
    env = {
        **env_for(str(config), slack, telegram, database_url),
        "SLACK_SIGNING_SECRET": SIGNING_SECRET,
        "SMSTOOLS_API_URL": smstools.api_url,
        "SMSTOOLS_CLIENT_ID": smstools.client_id,
        "SMSTOOLS_CLIENT_SECRET": smstools.client_secret,
    }
    assert BridgeProcess(["migrate"], env, tmp_path / "migrate.log").start().wait() == 0
    bridge = BridgeProcess(["serve"], env, tmp_path / "serve.log").start()  # web and worker
    try:
        with httpx.Client(base_url=bridge.url, timeout=10) as client:
            webhook = f"/webhooks/smstools/{TOKEN}"
            assert client.post(webhook, json=[inbox(CUSTOMER, TEXT, 1)]).status_code == 200
            root = slack.wait_for_posts(1, channel="C0SUPPORT", timeout=30)[0].ts
            poll(lambda: asyncio.run(_pending_jobs(database_url)) == 0, 30, bridge.output)
            # The agent answers in the customer's thread; the bridge sends it by SMS.
            body = json.dumps(slack_event(ANSWER, root, slack.post_as_member("C0SUPPORT")))
            signed = sign(body.encode(), int(time.time()))
            assert client.post("/slack/events", content=body, headers=signed).status_code == 200
            poll(lambda: [m.message for m in smstools.sent()] == [ANSWER], 30, bridge.output)
            poll(lambda: asyncio.run(_pending_jobs(database_url)) == 0, 30, bridge.output)
            before = {needle for _, needle in found_on_disk(database_url)}
            assert before == set(NEEDLES)  # the search finds them

            if command == "prune":
                time.sleep(1.5)  # past every retention
                erasing = BridgeProcess(["prune"], env, tmp_path / "prune.log").start()
            else:
                erasing = BridgeProcess(["forget", SHOWN], env, tmp_path / "forget.log").start()
            assert erasing.wait() == 0, erasing.output()
            assert "old copies on disk overwritten" in erasing.output(), erasing.output()
            left = found_on_disk(database_url)
            # The bridge goes on: another customer's message is stored and posted.
            assert client.post(webhook, json=[inbox(OTHER, "hello", 2)]).status_code == 200
            slack.wait_for_posts(2, channel="C0SUPPORT", timeout=30)
    finally:
        assert bridge.stop() in (0, -15), bridge.output()

    assert left == []


@asynccontextmanager
async def reading_an_old_snapshot(database_url: str) -> AsyncIterator[None]:
    """Another connection in a transaction that has read, hence holds a snapshot."""
    url = normalise_database_url(database_url)
    if url.startswith("sqlite"):
        reader = sqlite3.connect(url.split("///", 1)[1], isolation_level=None)
        try:
            reader.execute("BEGIN")
            reader.execute("SELECT count(*) FROM facts").fetchone()
            yield
            reader.execute("COMMIT")
        finally:
            reader.close()
        return
    connection = await asyncpg.connect(database_url)
    try:
        async with connection.transaction(isolation="repeatable_read"):
            await connection.fetchval("SELECT count(*) FROM facts")
            yield
    finally:
        await connection.close()


async def test_a_reader_still_seeing_the_old_copies_is_reported_then_the_next_run_finishes(
    database_url: str,
) -> None:
    database = Database(normalise_database_url(database_url), timeout=0.2)
    try:
        await migrate(database)
        async with reading_an_old_snapshot(database_url):
            async with database.transaction() as connection:
                await connection.execute(facts.insert().values(key="erased-soon", value="x"))
            async with database.transaction() as connection:
                await connection.execute(facts.delete().where(facts.c.key == "erased-soon"))
            held = await scrub(database, erasure.TABLES, attempts=2, pause=0.01)
        finished = await scrub(database, erasure.TABLES)
    finally:
        await database.close()

    assert not held.done and "tried 2 times" in held.detail, held
    assert finished.done, finished
