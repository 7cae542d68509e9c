"""Slow and piling-up clients against a real `smsbridge serve`, over real sockets: a body that
trickles in gets 408 and its connection closed after `BRIDGE_BODY_TIMEOUT`, an idle kept-alive
connection is closed after `BRIDGE_KEEP_ALIVE`, connections beyond `BRIDGE_MAX_CONNECTIONS` get
503 at once, and a normal webhook is answered meanwhile. Each on both of uvicorn's HTTP
parsers: the default (httptools where installed) and the pure-Python h11."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from bridge import runtime
from testkit.processes import BridgeProcess
from tests.conftest import sample
from tests.support.harness import TOKEN

pytestmark = pytest.mark.slow

BODY_TIMEOUT = 1.0
KEEP_ALIVE = 1
MAX_CONNECTIONS = 4
MARGIN = 1.5  # scheduling slack on a busy 2-core machine


@pytest.fixture(params=["auto", "h11"])
def bridge(
    request: pytest.FixtureRequest, tmp_path: Path, sqlite_url: str
) -> Iterator[BridgeProcess]:
    env = {
        "DATABASE_URL": sqlite_url,
        "BRIDGE_CONFIG": "",
        "SMSTOOLS_WEBHOOK_TOKEN": TOKEN,
        "BRIDGE_BODY_TIMEOUT": str(BODY_TIMEOUT),
        "BRIDGE_KEEP_ALIVE": str(KEEP_ALIVE),
        "BRIDGE_MAX_CONNECTIONS": str(MAX_CONNECTIONS),
    }
    args = ["serve"] if request.param == "auto" else ["serve", "--http", request.param]
    process = BridgeProcess(args, env, tmp_path / "serve.log").start()
    try:
        assert f"{runtime.choose(http=request.param).describe()})" in process.output()
        yield process
    finally:
        process.stop()


def connect(bridge: BridgeProcess) -> socket.socket:
    assert bridge.port is not None
    return socket.create_connection(("127.0.0.1", bridge.port), timeout=10)


def read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (10 s at most)."""
    received = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return received
        if not chunk:
            return received
        received += chunk


def trickle(sock: socket.socket, stop: threading.Event) -> None:
    """One byte of body every 0.2 s until the server hangs up (or the test is over)."""
    while not stop.wait(0.2):
        try:
            sock.sendall(b" ")
        except OSError:
            return


def test_a_trickling_body_gets_408_and_is_closed_while_a_webhook_is_answered(
    bridge: BridgeProcess,
) -> None:
    sock = connect(bridge)
    stop = threading.Event()
    try:
        sock.sendall(
            f"POST /webhooks/smstools/{TOKEN} HTTP/1.1\r\nHost: bridge\r\n"
            "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n[".encode()
        )
        started = time.monotonic()
        sender = threading.Thread(target=trickle, args=(sock, stop))
        sender.start()
        normal = httpx.post(
            f"{bridge.url}/webhooks/smstools/{TOKEN}", json=sample("inbox_message"), timeout=5
        )
        answer = read_until_closed(sock)
        closed_after = time.monotonic() - started
    finally:
        stop.set()
        sock.close()
    assert normal.status_code == 200 and normal.json() == {"received": 1}
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert b'{"error":"the body did not arrive within 1s"}' in answer
    assert BODY_TIMEOUT <= closed_after < BODY_TIMEOUT + MARGIN
    print(f"trickling body answered 408 and closed after {closed_after:.2f}s")


def test_an_idle_kept_alive_connection_is_closed_after_the_keep_alive_timeout(
    bridge: BridgeProcess,
) -> None:
    sock = connect(bridge)
    try:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: bridge\r\n\r\n")
        answer = b""
        while not answer.endswith(b'{"status":"ok"}'):
            answer += sock.recv(65536)
        answered = time.monotonic()
        rest = read_until_closed(sock)
        closed_after = time.monotonic() - answered
    finally:
        sock.close()
    assert answer.startswith(b"HTTP/1.1 200 ") and rest == b""
    assert KEEP_ALIVE - 0.1 <= closed_after < KEEP_ALIVE + MARGIN
    print(f"idle keep-alive connection closed after {closed_after:.2f}s")


def test_connections_beyond_the_limit_get_503_at_once_and_service_resumes(
    bridge: BridgeProcess,
) -> None:
    # Idle half-sent requests hold their connections until BRIDGE_HEADER_TIMEOUT (10 s,
    # longer than this test); meanwhile the limit keeps them from piling up without bound.
    idle = [connect(bridge) for _ in range(MAX_CONNECTIONS)]
    try:
        for sock in idle:
            sock.sendall(b"POST /webhooks/smst")
        for _ in range(100):  # until the server has accepted them all
            crowded = httpx.get(f"{bridge.url}/healthz", timeout=5)
            if crowded.status_code == 503:
                break
            time.sleep(0.05)
        assert crowded.status_code == 503
        assert crowded.headers["connection"] == "close"
    finally:
        for sock in idle:
            sock.close()
    for _ in range(100):
        if httpx.get(f"{bridge.url}/healthz", timeout=5).status_code == 200:
            break
        time.sleep(0.05)
    assert httpx.get(f"{bridge.url}/healthz", timeout=5).status_code == 200


# -- the body deadline itself, on one event loop -------------------------------------------------
