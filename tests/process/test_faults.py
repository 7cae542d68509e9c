"""Faults said out loud, by a real `smsbridge`: a connection that never finishes its request
head is closed after `BRIDGE_HEADER_TIMEOUT` while webhooks are answered; a port in use, an
unwritable database and a failing output are each one line; a worker that cannot write says
so at once and `/readyz` says why; a reader that stops reading ends a command quietly."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import httpx
import pytest

from testkit.processes import SMSBRIDGE, BridgeProcess, free_port
from tests.conftest import sample
from tests.support.harness import TOKEN

pytestmark = pytest.mark.slow

HEADER_TIMEOUT = 1.0
MARGIN = 1.5  # scheduling slack on a busy 2-core machine
TELEGRAM_SECRET = "t" * 40  # set, so a read-only database is not written at start-up


def environment(database_url: str, **more: str) -> dict[str, str]:
    return {
        "DATABASE_URL": database_url,
        "BRIDGE_CONFIG": "",
        "SMSTOOLS_WEBHOOK_TOKEN": TOKEN,
        "TELEGRAM_WEBHOOK_SECRET": TELEGRAM_SECRET,
        **more,
    }


def run(
    args: list[str], env: dict[str, str], stdout: int | IO[str] | None = subprocess.PIPE
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [SMSBRIDGE, *args],
        env={**os.environ, **env},
        stdout=stdout,
        stderr=subprocess.PIPE,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture
def bridge(tmp_path: Path, sqlite_url: str) -> Iterator[BridgeProcess]:
    env = environment(sqlite_url, BRIDGE_HEADER_TIMEOUT=str(HEADER_TIMEOUT))
    process = BridgeProcess(["serve"], env, tmp_path / "serve.log").start()
    try:
        yield process
    finally:
        process.stop()


def wait_closed(sock: socket.socket) -> None:
    """Until the server closes `sock` (10 s at most), having sent nothing."""
    try:
        received = sock.recv(65536)
    except ConnectionResetError:
        received = b""
    assert received == b""


def test_half_a_request_line_is_closed_after_the_header_timeout_while_webhooks_are_answered(
    bridge: BridgeProcess,
) -> None:
    assert bridge.port is not None
    half = socket.create_connection(("127.0.0.1", bridge.port), timeout=10)
    silent = socket.create_connection(("127.0.0.1", bridge.port), timeout=10)
    try:
        started = time.monotonic()
        half.sendall(b"POST /webhooks/smst")
        normal = httpx.post(
            f"{bridge.url}/webhooks/smstools/{TOKEN}", json=sample("inbox_message"), timeout=5
        )
        wait_closed(half)
        half_closed = time.monotonic() - started
        wait_closed(silent)
        silent_closed = time.monotonic() - started
    finally:
        half.close()
        silent.close()
    assert normal.status_code == 200 and normal.json() == {"received": 1}
    assert HEADER_TIMEOUT - 0.1 <= half_closed < HEADER_TIMEOUT + MARGIN
    assert HEADER_TIMEOUT - 0.1 <= silent_closed < HEADER_TIMEOUT + MARGIN
    print(f"half a request line: closed after {half_closed:.2f}s")


def test_a_kept_alive_connection_has_the_header_timeout_again_for_its_next_request(
    bridge: BridgeProcess,
) -> None:
    assert bridge.port is not None
    with socket.create_connection(("127.0.0.1", bridge.port), timeout=10) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: bridge\r\n\r\n")
        answer = b""
        while not answer.endswith(b'{"status":"ok"}'):
            answer += sock.recv(65536)
        started = time.monotonic()
        sock.sendall(b"GET /heal")  # the next request, never finished
        wait_closed(sock)
        waited = time.monotonic() - started
    assert answer.startswith(b"HTTP/1.1 200 ")
    assert HEADER_TIMEOUT - 0.1 <= waited < HEADER_TIMEOUT + MARGIN


def test_a_port_in_use_is_one_line_and_serving_is_never_said(sqlite_url: str) -> None:
    port = free_port()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        done = run(["serve", "--host", "127.0.0.1", "--port", str(port)], environment(sqlite_url))
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr == (
        f"smsbridge: cannot listen on 127.0.0.1:{port}: the port is in use (another process "
        "listens on it; choose one with --port or PORT)\n"
    )


def read_only(tmp_path: Path) -> str:
    """A migrated SQLite database, opened read-only: every write fails."""
    path = tmp_path / "bridge.db"
    migrated = run(["migrate"], environment(f"sqlite:///{path}"))
    assert migrated.returncode == 0, migrated.stderr
    return f"sqlite:///file:{path}?mode=ro&uri=true"


def test_serve_on_an_unwritable_database_is_one_line(tmp_path: Path) -> None:
    # Without the Telegram secret in the environment, start-up writes a generated one.
    env = {**environment(read_only(tmp_path)), "TELEGRAM_WEBHOOK_SECRET": ""}
    done = run(["serve", "--host", "127.0.0.1", "--port", str(free_port())], env)
    assert done.returncode == 1
    (line,) = done.stderr.splitlines()
    assert line.startswith("smsbridge: cannot use the database sqlite+aiosqlite:///file")
    assert line.endswith(": OperationalError: attempt to write a readonly database")
    assert "serving on" not in done.stdout + done.stderr


def test_a_worker_that_cannot_write_says_why_at_once_and_readyz_says_it(
    tmp_path: Path,
) -> None:
    env = environment(read_only(tmp_path))
    bridge = BridgeProcess(["serve"], env, tmp_path / "serve.log").start()
    try:
        deadline = time.monotonic() + 5
        while "cannot start delivering" not in bridge.output() and time.monotonic() < deadline:
            time.sleep(0.05)
        ready = httpx.get(f"{bridge.url}/readyz", timeout=5)
    finally:
        code = bridge.stop()
    said = bridge.output()
    assert (
        "ERROR bridge.delivery.worker: cannot start delivering (OperationalError: attempt to "
        "write a readonly database); trying again in 1s"
    ) in said
    assert said.index("serving on") < said.index("cannot start delivering")
    assert ready.status_code == 503
    worker = ready.json()["checks"]["worker"]
    assert worker["detail"].endswith(
        "cannot start delivering (OperationalError: attempt to write a readonly database)"
    )
    assert code in (0, -15) and "Traceback" not in said


def test_a_reader_that_stops_reading_ends_a_command_quietly(sqlite_url: str) -> None:
    env = environment(sqlite_url)
    assert run(["migrate"], env).returncode == 0
    reader, writer = os.pipe()
    os.close(reader)  # `| head -0`: gone before the first line
    try:
        done = run(["forget", "+32 470 12 34 56"], env, stdout=writer)
    finally:
        os.close(writer)
    assert done.stderr == ""
    assert done.returncode == 141  # 128 + SIGPIPE, as a shell shows `yes | head -1`


def test_an_output_that_cannot_be_written_is_one_line_that_names_it(sqlite_url: str) -> None:
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full to stand for a full disk")
    with open("/dev/full", "w") as full:
        done = run(["webhook-url"], environment(sqlite_url), stdout=full)
    assert done.returncode == 1
    assert done.stderr == "smsbridge: cannot write the output: No space left on device\n"
