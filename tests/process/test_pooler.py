"""PostgreSQL behind PgBouncer in transaction mode (Heroku's, Supabase's, Neon's poolers): the
bridge finds the pooler by itself, no prepared statement outlives its transaction, LISTEN runs
only where it hears (DATABASE_DIRECT_URL) and workers poll otherwise; and a database URL the
bridge cannot use is one line saying what it accepts."""

from __future__ import annotations

import asyncio
import logging
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from bridge.cli import main
from bridge.ops import retention
from bridge.settings import Settings, SettingsError, normalise_database_url
from bridge.store import group_writes, wakeups
from bridge.store.db import Database
from bridge.store.migrations import LATEST, current_version, migrate
from testkit.fakes.slack import FakeSlack
from testkit.fakes.smstools import FakeSmstools
from testkit.fakes.telegram import FakeTelegram
from testkit.processes import BridgeProcess, free_port
from tests.conftest import POSTGRES_ADMIN_URL
from tests.support import alert_fixtures
from tests.support.harness import Clock, running_bridge, wait_until
from tests.support.metrics_fixtures import credentials
from tests.support.pipeline_fixtures import adapters, inbox, make_config
from tests.support.traffic import (
    CONFIG,
    burst,
    check_threads_and_order,
    env_for,
    send,
    shown_count,
    wait_until_quiet,
    wait_until_shown,
)
from tests.support.wire import counting_round_trips

# In transaction mode with two server connections per database, a client's consecutive
# transactions land on whichever server connection is free: a named prepared statement left on
# one is met again (or missed) by the next client there.
PGBOUNCER_CONFIG = """\
[databases]
* = host={host} port={port}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {listen_port}
unix_socket_dir =
auth_type = trust
auth_file = {directory}/users.txt
pool_mode = transaction
default_pool_size = 2
max_client_conn = 200
pidfile = {directory}/pgbouncer.pid
logfile = {directory}/pgbouncer.log
"""


def _pgbouncer_binary() -> str | None:
    return shutil.which("pgbouncer") or next(
        (path for path in ("/usr/sbin/pgbouncer", "/usr/bin/pgbouncer") if os.path.exists(path)),
        None,
    )


@pytest.fixture(scope="module")
def pgbouncer() -> Iterator[int]:
    """A PgBouncer (transaction mode) in front of the test PostgreSQL; its port. Skipped with a
    message when PgBouncer is not installed, failed in CI."""
    binary = _pgbouncer_binary()
    if binary is None:
        message = (
            "PgBouncer is not installed: apt-get install -y --no-install-recommends pgbouncer "
            "(.ci/run does)"
        )
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    target = urlsplit(POSTGRES_ADMIN_URL)
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="pgbouncer-") as name:
        directory = Path(name)
        (directory / "users.txt").write_text('"postgres" ""\n')
        (directory / "pgbouncer.ini").write_text(
            PGBOUNCER_CONFIG.format(
                host=target.hostname or "127.0.0.1",
                port=target.port or 5432,
                listen_port=port,
                directory=directory,
            )
        )
        command = [binary, str(directory / "pgbouncer.ini")]
        if os.geteuid() == 0:  # PgBouncer refuses to run as root
            postgres = pwd.getpwnam("postgres")
            for path in (directory, *directory.iterdir()):
                os.chown(path, postgres.pw_uid, postgres.pw_gid)
            command = ["runuser", "-u", "postgres", "--", *command]
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        try:
            _wait_for_port(port, process, directory / "pgbouncer.log")
            yield port
        finally:
            process.terminate()
            process.wait(10)


def _wait_for_port(port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"PgBouncer exited: {log.read_text() if log.exists() else ''}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    pytest.fail(f"PgBouncer did not listen on {port}")


@pytest.fixture
def pooled_url(pgbouncer: int, postgres_url: str) -> str:
    """`postgres_url`'s database, reached through the pooler."""
    parts = urlsplit(postgres_url)
    user = parts.netloc.rsplit("@", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{user}@127.0.0.1:{pgbouncer}"))


# -- finding the pooler ----------------------------------------------------------------------


@pytest.mark.postgres
async def test_a_pooler_is_recognised_and_direct_postgresql_is_not(
    pooled_url: str, postgres_url: str
) -> None:
    pooled = Database(normalise_database_url(pooled_url))
    direct = Database(normalise_database_url(postgres_url))
    try:
        assert await pooled.behind_pooler() is True
        assert await direct.behind_pooler() is False
    finally:
        await pooled.close()
        await direct.close()


# -- the contract through the pooler ----------------------------------------------------------


@pytest.mark.postgres
async def test_migrations_from_two_processes_at_once_through_the_pooler(pooled_url: str) -> None:
    databases = [Database(normalise_database_url(pooled_url)) for _ in range(2)]
    try:
        await asyncio.gather(*(migrate(database) for database in databases))
        assert await migrate(databases[0]) == (LATEST, LATEST)
        async with databases[1].transaction() as connection:
            assert await current_version(connection) == LATEST
    finally:
        for database in databases:
            await database.close()


@pytest.mark.postgres
@pytest.mark.parametrize("through", ["pooler", "direct"])
async def test_a_webhook_group_is_one_round_trip_through_the_pooler_or_not(
    pooled_url: str, postgres_url: str, through: str
) -> None:
    """Behind a pooler a statement is parsed anew at every run: the group's write sends that
    parse with its run, one round trip, not a description first and then the run. Directly,
    it runs a statement prepared at the connection's first group."""
    bodies = [group_writes.NewBody(b"[]", 1.0)]
    url = pooled_url if through == "pooler" else postgres_url
    async with counting_round_trips(url) as (relayed, turns):
        database = Database(normalise_database_url(relayed))
        try:
            await migrate(database)
            async with database.autocommit() as connection:
                await group_writes.store(database, connection, bodies)
                before = turns.count
                for _ in range(3):
                    await group_writes.store(database, connection, bodies)
                assert turns.count - before == 3
        finally:
            await database.close()


@pytest.mark.postgres
async def test_webhooks_at_once_are_ingested_and_delivered_once_through_the_pooler(
    pooled_url: str, slack: FakeSlack, telegram: FakeTelegram
) -> None:
    async with running_bridge(
        pooled_url, make_config(), adapters(slack, telegram), run_worker=False
    ) as bridge:
        texts = [f"note{n:03d}x" for n in range(60)]
        answers = await asyncio.gather(
            *(bridge.post([inbox(f"3247011{n:04d}", text)]) for n, text in enumerate(texts))
        )
        assert [answer.status_code for answer in answers] == [200] * len(texts)
        again = await bridge.post([inbox("32470110000", "hello again")])
        assert again.status_code == 200
        await bridge.worker.drain()
    shown = [post.text or "" for post in slack.posts("C0SUPPORT")]
    for text in [*texts, "hello again"]:
        assert sum(post.count(text) for post in shown) == 1, text


@pytest.mark.postgres
async def test_the_credit_check_and_pruning_through_the_pooler(
    pooled_url: str, slack: FakeSlack, telegram: FakeTelegram, smstools: FakeSmstools
) -> None:
    clock = Clock()
    config = alert_fixtures.make_config(low_balance=100)
    smstools.set_balance(42.5)
    async with running_bridge(
        pooled_url,
        config,
        alert_fixtures.adapters(slack, telegram),
        run_worker=False,
        now=clock,
        env=credentials(smstools),
    ) as bridge:
        assert bridge.app.state.credit is not None
        await bridge.app.state.credit.check()
        await bridge.worker.drain()
        database = bridge.worker.database
        assert await database.behind_pooler()
        pruned = await retention.prune(database, config, clock() + 400 * 86400.0)
    (low,) = [post.text or "" for post in slack.posts("C0ONCALL")]
    assert "Smstools credit is low: 42.5 EUR" in low
    assert not pruned.busy


# -- LISTEN ----------------------------------------------------------------------------------


@pytest.mark.postgres
async def test_behind_a_pooler_without_a_direct_url_workers_poll(
    pooled_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    database = Database(normalise_database_url(pooled_url))
    woken: list[None] = []
    try:
        with caplog.at_level(logging.INFO, logger="bridge.store.wakeups"):
            await asyncio.wait_for(wakeups.listen(database, lambda: woken.append(None)), 10)
    finally:
        await database.close()
    (said,) = [record.getMessage() for record in caplog.records]
    assert "polling for new jobs" in said and "DATABASE_DIRECT_URL" in said


@pytest.mark.postgres
async def test_a_listen_that_cannot_hear_is_not_believed(
    pooled_url: str, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(wakeups, "HEARING_TIMEOUT", 1.0)
    # DATABASE_DIRECT_URL set by mistake to the pooler's URL too.
    url = normalise_database_url(pooled_url)
    database = Database(url, direct_url=url)
    try:
        with caplog.at_level(logging.INFO, logger="bridge.store.wakeups"):
            await asyncio.wait_for(wakeups.listen(database, lambda: None), 10)
    finally:
        await database.close()
    (said,) = [record.getMessage() for record in caplog.records]
    assert "LISTEN on DATABASE_DIRECT_URL does not hear NOTIFY" in said


@pytest.mark.postgres
async def test_with_a_direct_url_listen_hears_what_is_planned_through_the_pooler(
    pooled_url: str, postgres_url: str
) -> None:
    database = Database(
        normalise_database_url(pooled_url), direct_url=normalise_database_url(postgres_url)
    )
    woken: list[None] = []
    listening = asyncio.create_task(wakeups.listen(database, lambda: woken.append(None)))
    try:
        await wait_until(lambda: len(woken) == 1, "the first wake-up")
        async with database.transaction() as connection:
            await wakeups.announce(database, connection)
        await wait_until(lambda: len(woken) == 2, "woken by a NOTIFY sent through the pooler")
        assert not listening.done()
    finally:
        listening.cancel()
        await asyncio.gather(listening, return_exceptions=True)
        await database.close()


# -- whole processes -------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.postgres
def test_web_and_worker_processes_through_the_pooler_deliver_everything_once(
    tmp_path: Path, pooled_url: str, postgres_url: str
) -> None:
    with FakeSlack() as slack, FakeTelegram() as telegram:
        config = tmp_path / "bridge.yaml"
        config.write_text(CONFIG)
        env = env_for(str(config), slack, telegram, pooled_url)
        migrating = BridgeProcess(["migrate"], env, tmp_path / "migrate.log").start()
        assert migrating.wait() == 0, migrating.output()
        processes = [
            BridgeProcess(["serve", "--no-worker"], env, tmp_path / "web.log").start(),
            BridgeProcess(["worker"], env, tmp_path / "worker.log").start(),
        ]
        try:
            totals = send([processes[0].url], burst(8, 10), resend_every=7)
            wait_until_shown(slack, telegram, 80, timeout=120)
            wait_until_quiet(postgres_url, slack, telegram)
        finally:
            codes = [process.stop() for process in processes]
        logs = {process.log_path.name: process.output() for process in processes}
        assert all(code in (0, -15) for code in codes), logs  # -15: uvicorn's graceful exit
        assert totals["received"] == 80 + totals["resent"] and totals["resent"] > 0
        assert shown_count(slack, telegram) == 80
        found = check_threads_and_order(slack, telegram, 8, 10)
        assert found["duplicates"] == 0 and found["repeats"] == 0
        for name, output in [*logs.items(), ("migrate.log", migrating.output())]:
            assert " ERROR " not in output and "Traceback" not in output, f"{name}:\n{output}"
        assert "polling for new jobs" in logs["worker.log"]


# -- database URLs the bridge cannot use -----------------------------------------------------


@pytest.mark.parametrize(
    "url", ["mysql://root:hunter2@db/bridge", "mariadb+asyncmy://db/x", "db.example.com/bridge"]
)
def test_an_unsupported_database_url_is_one_line_saying_what_is_accepted(url: str) -> None:
    with pytest.raises(SettingsError) as raised:
        Settings.from_env({"DATABASE_URL": url})
    (problem,) = raised.value.problems
    assert problem.startswith("DATABASE_URL: ")
    assert "sqlite:///" in problem and "postgresql://" in problem
    assert "hunter2" not in problem and "async driver" not in problem


def test_the_command_line_says_it_in_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DATABASE_URL", "mysql://root:hunter2@db/bridge")
    assert main(["migrate"]) == 1
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("smsbridge: environment: DATABASE_URL: mysql:// is not a database")


def test_a_direct_url_must_be_postgresql() -> None:
    base = {"DATABASE_URL": "postgres://u@pooler:6543/db"}
    direct = Settings.from_env({**base, "DATABASE_DIRECT_URL": "postgres://u@db:5432/db"})
    assert direct.database_direct_url == "postgresql+asyncpg://u@db:5432/db"
    assert Settings.from_env(base).database_direct_url is None
    with pytest.raises(SettingsError) as raised:
        Settings.from_env({**base, "DATABASE_DIRECT_URL": "sqlite:///x.db"})
    assert raised.value.problems == ["DATABASE_DIRECT_URL: a direct URL is postgresql://…"]
