"""Dead letters: jobs that failed for good are kept with their last error, listed and retried
with `smsbridge dead-letters`, and a failing destination is reported once, not per message."""

from __future__ import annotations

import asyncio
import logging

import pytest
from sqlalchemy import select, update

from bridge.cli import main
from bridge.jobs import ConversationKey, InboxJob
from bridge.settings import normalise_database_url
from bridge.store import outbox as outbox_store
from bridge.store.db import Database
from bridge.store.migrations import migrate
from bridge.store.schema import outbox
from testkit.fakes.slack import FakeSlack
from testkit.fakes.telegram import FakeTelegram
from tests.support.harness import Clock, running_bridge
from tests.support.pipeline_fixtures import LINE_FR, adapters, inbox, make_config, rows

CUSTOMER = "32470555101"


async def smsbridge(*argv: str) -> int:
    """Run the real CLI; it starts its own event loop, so it runs in a thread here."""
    return await asyncio.to_thread(main, list(argv))


async def statuses(database_url: str) -> dict[int, tuple[str, str, str | None]]:
    found = await rows(
        database_url,
        select(outbox.c.id, outbox.c.destination, outbox.c.status, outbox.c.last_error),
    )
    return {job.id: (job.destination, job.status, job.last_error) for job in found}


async def three_dead_letters_for_sales(
    database_url: str, slack: FakeSlack, telegram: FakeTelegram
) -> list[int]:
    """Three messages to the sales+support line while the bot is not in the sales channel."""
    slack.set_error("C0SALES", "not_in_channel")
    async with running_bridge(
        database_url, make_config(), adapters(slack, telegram), run_worker=False
    ) as bridge:
        await bridge.post(
            [inbox(CUSTOMER, f"secret order {n}", receiver=LINE_FR) for n in range(3)]
        )
        await bridge.worker.drain()
    jobs = await statuses(database_url)
    return sorted(
        id for id, (where, status, _) in jobs.items() if (where, status) == ("sales", "dead")
    )


async def test_dead_letters_list_shows_each_with_its_last_error_and_no_content(
    database_url: str,
    slack: FakeSlack,
    telegram: FakeTelegram,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    dead = await three_dead_letters_for_sales(database_url, slack, telegram)
    assert len(dead) == 3 and len(slack.posts("C0SUPPORT")) == 3  # support is not held back
    monkeypatch.setenv("DATABASE_URL", database_url)
    assert await smsbridge("dead-letters", "list") == 0
    out = capsys.readouterr().out
    lines = out.strip().splitlines()
    assert [int(line.split("\t")[0]) for line in lines[:-1]] == dead
    for line in lines[:-1]:
        assert "sales" in line and "not_in_channel" in line and "invite the bot" in line
    assert lines[-1].startswith("3 dead letter(s)")
    assert "secret order" not in out and CUSTOMER not in out


async def test_retry_one_id_after_the_bot_was_invited_delivers_that_one_only(
    database_url: str,
    slack: FakeSlack,
    telegram: FakeTelegram,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    dead = await three_dead_letters_for_sales(database_url, slack, telegram)
    slack.set_error("C0SALES", None)  # the bot was invited
    monkeypatch.setenv("DATABASE_URL", database_url)
    assert await smsbridge("dead-letters", "retry", str(dead[0])) == 0
    assert "1 dead letter(s) queued again" in capsys.readouterr().out
    async with running_bridge(
        database_url, make_config(), adapters(slack, telegram), run_worker=False
    ) as bridge:
        await bridge.worker.drain()
    (post,) = slack.posts("C0SALES")
    assert post.text is not None and post.text.startswith("secret order 0\n")
    jobs = await statuses(database_url)
    assert [jobs[id][1] for id in dead] == ["done", "dead", "dead"]
    assert jobs[dead[0]][2] is None  # a delivered job carries no error


async def test_retry_all_delivers_every_dead_letter_once_in_order(
    database_url: str,
    slack: FakeSlack,
    telegram: FakeTelegram,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    dead = await three_dead_letters_for_sales(database_url, slack, telegram)
    slack.set_error("C0SALES", None)
    monkeypatch.setenv("DATABASE_URL", database_url)
    assert await smsbridge("dead-letters", "retry", "--all") == 0
    assert "3 dead letter(s) queued again" in capsys.readouterr().out
    async with running_bridge(
        database_url, make_config(), adapters(slack, telegram), run_worker=False
    ) as bridge:
        await bridge.worker.drain()
    texts = [p.text and p.text.split("\n")[0] for p in slack.posts("C0SALES")]
    assert texts == [f"secret order {n}" for n in range(3)]
    assert {(await statuses(database_url))[id][1] for id in dead} == {"done"}
    assert await smsbridge("dead-letters", "list") == 0
    assert capsys.readouterr().out == "no dead letters\n"


async def test_retrying_a_job_that_is_not_a_dead_letter_says_so_and_fails(
    database_url: str,
    slack: FakeSlack,
    telegram: FakeTelegram,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    dead = await three_dead_letters_for_sales(database_url, slack, telegram)
    delivered = next(id for id, job in (await statuses(database_url)).items() if job[1] == "done")
    monkeypatch.setenv("DATABASE_URL", database_url)
    assert await smsbridge("dead-letters", "retry", str(delivered), "999999", str(dead[1])) == 1
    captured = capsys.readouterr()
    assert f"job {delivered} is not a dead letter" in captured.err
    assert "job 999999 is not a dead letter" in captured.err
    assert "1 dead letter(s) queued again" in captured.out
    assert (await statuses(database_url))[delivered][1] == "done"  # never sent twice


def test_retry_needs_ids_or_all_but_not_both(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DATABASE_URL", sqlite_url)
    for argv in (["dead-letters", "retry"], ["dead-letters", "retry", "1", "--all"]):
        with pytest.raises(SystemExit) as exit:
            main(argv)
        assert exit.value.code == 2
        assert "give job IDs or --all" in capsys.readouterr().err


async def test_transient_failures_become_dead_letters_after_24_hours_of_retries(
    sqlite_url: str, slack: FakeSlack, telegram: FakeTelegram
) -> None:
    clock = Clock()
    slack.set_down("C0SUPPORT")  # 503 for ever
    async with running_bridge(
        sqlite_url, make_config(), adapters(slack, telegram), run_worker=False, now=clock
    ) as bridge:
        await bridge.post([inbox(CUSTOMER, "hello")])
        for _ in range(24 * 6 - 1):  # every 10 minutes for 23 h 50 min: still retried
            await bridge.worker.drain()
            clock.advance(600)
        ((_, status, error),) = (await statuses(sqlite_url)).values()
        assert status == "pending"
        clock.advance(600)
        await bridge.worker.drain()
    ((_, status, error),) = (await statuses(sqlite_url)).values()
    assert status == "dead"
    assert error is not None and "HTTP 503" in error and "C0SUPPORT" in error


async def test_a_permanently_failing_destination_is_reported_once_not_per_message(
    sqlite_url: str,
    slack: FakeSlack,
    telegram: FakeTelegram,
    caplog: pytest.LogCaptureFixture,
) -> None:
    slack.set_error("C0SALES", "channel_not_found")
    with caplog.at_level(logging.INFO):
        async with running_bridge(
            sqlite_url, make_config(), adapters(slack, telegram), run_worker=False
        ) as bridge:
            for n in range(5):
                await bridge.post([inbox(f"3247055520{n}", "hi", receiver=LINE_FR)])
                await bridge.worker.drain()
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert "sales" in errors[0].getMessage() and "channel_not_found" in errors[0].getMessage()
    assert sum(status == "dead" for _, status, _ in (await statuses(sqlite_url)).values()) == 5


async def test_a_long_list_says_it_is_cut_and_gives_the_true_total(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    database = Database(normalise_database_url(sqlite_url))
    try:
        await migrate(database)
        async with database.transaction() as connection:
            for n in range(1001):
                await outbox_store.enqueue(
                    database,
                    connection,
                    event_id=n,
                    destination="sales",
                    payload=InboxJob(
                        conversation=ConversationKey(receiver=LINE_FR, sender=f"3247{n:07d}")
                    ),
                    now=1_800_000_000.0,
                )
            await connection.execute(
                update(outbox).values(
                    status=outbox_store.DEAD,
                    last_error="not_in_channel",
                    finished_at=1_800_000_001.0,  # as `outbox_store.bury` marks one
                )
            )
    finally:
        await database.close()
    monkeypatch.setenv("DATABASE_URL", sqlite_url)
    assert await smsbridge("dead-letters", "list") == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1001
    assert lines[-1].startswith("the first 1000 of 1001 dead letter(s); retry with:")
