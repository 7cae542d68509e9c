"""Shared fixtures: databases (SQLite and PostgreSQL), sample webhooks, an offline network."""

from __future__ import annotations

import gc
import json
import os
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiosqlite
import asyncpg
import pytest

from bridge import heap
from bridge.settings import normalise_database_url
from bridge.store.db import Database
from bridge.store.migrations import migrate
from testkit.fakes.slack import FakeSlack
from testkit.fakes.smstools import FakeSmstools
from testkit.fakes.telegram import FakeTelegram

SAMPLES = Path(__file__).parent / "samples"
POSTGRES_ADMIN_URL = os.environ.get(
    "BRIDGE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)


def sample(name: str) -> list[dict[str, Any]]:
    """A webhook body from tests/samples (copies of the gateway's documented examples)."""
    body: list[dict[str, Any]] = json.loads((SAMPLES / f"{name}.json").read_text())
    return body


@pytest.fixture(autouse=True)
def no_proxies(monkeypatch: pytest.MonkeyPatch) -> None:
    """slack-sdk and httpx read proxy variables; tests talk to loopback fakes directly."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """A test that touches the real network fails: only loopback addresses may be reached."""
    real_connect = socket.socket.connect

    def guarded(sock: socket.socket, address: Any) -> Any:
        host = address[0] if isinstance(address, tuple) else address
        if isinstance(host, str) and sock.family in (socket.AF_INET, socket.AF_INET6):
            if not (host.startswith("127.") or host in ("::1", "localhost")):
                raise OSError(f"test tried to reach {host}: tests stay on loopback")
        return real_connect(sock, address)

    monkeypatch.setattr(socket.socket, "connect", guarded)


async def _postgres_database() -> str:
    """Create a fresh database for one test; skip (or fail in CI) when PostgreSQL is absent."""
    try:
        admin = await asyncpg.connect(POSTGRES_ADMIN_URL, timeout=3)
    except (OSError, asyncpg.PostgresError) as error:
        message = (
            f"PostgreSQL not reachable at {POSTGRES_ADMIN_URL} ({error}); start it with "
            "`pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start`"
        )
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    name = f"bridge_test_{uuid.uuid4().hex[:12]}"
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    return POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + "/" + name


async def _drop_postgres_database(url: str) -> None:
    name = url.rsplit("/", 1)[1]
    admin = await asyncpg.connect(POSTGRES_ADMIN_URL, timeout=3)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture
async def postgres_url() -> AsyncIterator[str]:
    url = await _postgres_database()
    yield url
    await _drop_postgres_database(url)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'bridge.db'}"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """The same test against SQLite and PostgreSQL: the storage layer's contract."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'bridge.db'}"
        return
    url = await _postgres_database()
    yield url
    await _drop_postgres_database(url)


@pytest.fixture
async def database(database_url: str) -> AsyncIterator[Database]:
    db = Database(normalise_database_url(database_url))
    await migrate(db)
    yield db
    await db.close()


@pytest.fixture
def trips(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every call aiosqlite runs on its thread, as it is queued (a spy: each call still runs)."""
    calls: list[Any] = []
    queue_call = aiosqlite.Connection._execute

    async def counted(self: aiosqlite.Connection, function: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(function)
        return await queue_call(self, function, *args, **kwargs)

    monkeypatch.setattr(aiosqlite.Connection, "_execute", counted)
    return calls


@pytest.fixture
def samples_dir() -> Iterator[Path]:
    yield SAMPLES


@pytest.fixture(scope="session")
def slack_server() -> Iterator[FakeSlack]:
    with FakeSlack() as fake:
        yield fake


@pytest.fixture(scope="session")
def telegram_server() -> Iterator[FakeTelegram]:
    with FakeTelegram() as fake:
        yield fake


@pytest.fixture
def slack(slack_server: FakeSlack) -> FakeSlack:
    """The fake Slack, switches reset and recordings cleared for this test."""
    slack_server.reset()
    slack_server.clear()
    return slack_server


@pytest.fixture
def telegram(telegram_server: FakeTelegram) -> FakeTelegram:
    """The fake Telegram, switches reset and recordings cleared for this test."""
    telegram_server.reset()
    telegram_server.clear()
    return telegram_server


@pytest.fixture(scope="session")
def smstools_server() -> Iterator[FakeSmstools]:
    with FakeSmstools() as fake:
        yield fake


@pytest.fixture
def smstools(smstools_server: FakeSmstools) -> FakeSmstools:
    """The fake Smstools API, switches reset and recordings cleared for this test."""
    smstools_server.reset()
    smstools_server.clear()
    smstools_server.set_balance(123.45, "EUR")
    return smstools_server


TIERS = ("unit", "system", "process", "static")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Each test is marked with its tier, the folder under tests/ it lives in, so `-m` can pick
    tiers (`-m "not process"`) whatever paths were given."""
    tests = Path(__file__).parent
    for item in items:
        parts = item.path.relative_to(tests).parts if item.path.is_relative_to(tests) else ()
        if parts and parts[0] in TIERS:
            item.add_marker(parts[0])


@pytest.fixture
def settled_heap() -> Iterator[None]:
    """The test process's heap settled as `serve` settles its own (`bridge.heap`), for tests
    that bound a latency: what the session built so far is frozen. Late in a session the
    process tracks about a million objects, and a full collection of them paused it for
    0.33–0.65 s (measured over `tests/system`), once failing a webhook's 0.5 s bound in
    `test_slow_api`; frozen, a collection during the test scans only the test's own. Given
    back as it was after the test."""
    thresholds = gc.get_threshold()
    heap.settle()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)
