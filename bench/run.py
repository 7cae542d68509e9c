"""Benchmark: the bridge's webhook side by side with a bare Starlette endpoint.

Runs `smsbridge serve` as a real process on loopback (with the fake Slack of the tests) on
SQLite and (when it answers) PostgreSQL, and `bench/bare.py` under the same uvicorn settings
and on the same loop and HTTP parser, in the same run: the production stack (uvloop and
httptools, when installed), and with `--stacks both` the pure-Python one (asyncio and h11)
too, side by side. Servers are pinned to CPU 0 and load generators to CPU 1, so the load does
not steal the core it measures. Needs wrk (`apt-get install wrk`). Writes docs/benchmarks.md.

    make bench            # or: .venv/bin/python -m bench.run [--quick] [--stacks both]
    make bench BENCH_ARGS="--stacks both"
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from bench import paced
from bridge.http.edge import MAX_BODY
from bridge.runtime import Runtime, choose
from testkit.fakes.slack import FakeSlack
from testkit.processes import BridgeProcess, free_port

TOKEN = "bench-token-0123456789abcdefghijklmn"  # the bridge refuses tokens under 32 characters
PATH = f"/webhooks/smstools/{TOKEN}"
SERVER_CPU, LOAD_CPU = "0", "1"
POSTGRES_ADMIN = os.environ.get(
    "BRIDGE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
CONFIG = """
destinations:
  support: {slack: {channel: C0BENCH}, max_rate: unlimited}
default: [support]
"""
# `serve` with its worker, measured for ingest as the target names it: one process,
# delivering each message to the console (its output goes to the process's log file).
CONSOLE = """
destinations:
  support: {console: {}, max_rate: unlimited}
default: [support]
"""
# The ingest targets, bridge ÷ bare: web only by database, and `serve` with its worker.
WEB_TARGET = {"SQLite": 0.6, "PostgreSQL": 0.5}
SERVE_TARGET = {"SQLite": 0.5}
BENCH = Path(__file__).parent


ROUNDS = 7  # ingest: rounds of bare endpoint, then bridge, in turn
PURE = Runtime("asyncio", "h11")  # what uvicorn runs on without its compiled extras


@dataclass
class Figures:
    rps: float = 0.0
    bare_rps: float = 0.0  # the bare endpoint's, in the same rounds
    ratio: float = 0.0  # median of each round's bridge ÷ bare
    half_p50: float = 0.0
    half_p99: float = 0.0
    body_1000: float = 0.0
    body_7000: float = 0.0
    e2e_p50: float | None = None
    e2e_p99: float | None = None
    serve: Figures | None = None  # ingest of `serve` with its worker, console destination
    rss_mb: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def stop(process: BridgeProcess) -> None:
    """Stop a bridge; one still busy after a minute is killed and said so (the run's
    figures are kept: they were measured before)."""
    try:
        process.stop(timeout=60)
    except subprocess.TimeoutExpired:
        print(f"{' '.join(process.args)}: not stopped 60 s after SIGTERM; killed", file=sys.stderr)
        process.stop(signal.SIGKILL, timeout=10)


def pin(pid: int, cpu: str) -> None:
    subprocess.run(["taskset", "-a", "-pc", cpu, str(pid)], check=True, capture_output=True)


def peak_rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"VmHWM:\s+(\d+) kB", status)
    return int(match.group(1)) / 1024 if match else 0.0


def wrk(url: str, seconds: int) -> float:
    """Requests per second at saturation: 1 thread, 16 connections, on the load CPU."""
    output = subprocess.run(
        [
            "taskset",
            "-c",
            LOAD_CPU,
            "wrk",
            "-t1",
            "-c16",
            f"-d{seconds}s",
            "-s",
            str(BENCH / "post.lua"),
            url,
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    if "Non-2xx" in output:
        raise RuntimeError(f"wrk saw answers other than 2xx:\n{output}")
    match = re.search(r"Requests/sec:\s+([\d.]+)", output)
    assert match, output
    return float(match.group(1))


def open_loop(port: int, rate: float, seconds: float) -> tuple[float, float]:
    output = subprocess.run(
        [
            "taskset",
            "-c",
            LOAD_CPU,
            sys.executable,
            "-m",
            "bench.openloop",
            "127.0.0.1",
            str(port),
            PATH,
            str(rate),
            str(seconds),
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    latencies = json.loads(output)
    return percentile(latencies, 0.5), percentile(latencies, 0.99)


def body(size: int, tag: str) -> bytes:
    events = [
        {
            "webhook_id": f"{tag}{n}",
            "webhook_type": "inbox_message",
            "message": {
                "sender": f"3247{n % 100:07d}",
                "receiver": "32460200000",
                "content": f"bench {n}",
            },
        }
        for n in range(size)
    ]
    raw = json.dumps(events, separators=(",", ":")).encode()
    assert len(raw) <= MAX_BODY, len(raw)
    return raw


def time_to_2xx(url: str, raw: bytes) -> float:
    with httpx.Client(timeout=60) as client:
        started = time.perf_counter()
        response = client.post(url, content=raw)
        elapsed = (time.perf_counter() - started) * 1000
    assert response.is_success, response.text
    return elapsed


@dataclass
class Yardstick:
    """The bare endpoint, running beside the bridge for the whole run."""

    url: str
    pid: int
    figures: Figures


def settle(pid: int, patience: float = 120.0) -> float:
    """Wait until a process uses under 5 % of a core over half a second (or `patience`);
    how long it was busy, to the half second."""
    started = time.monotonic()
    deadline = started + patience
    while time.monotonic() < deadline:
        before = paced.cpu_seconds(pid)
        time.sleep(0.5)
        if paced.cpu_seconds(pid) - before < 0.025:
            break
    return time.monotonic() - started - 0.5


@dataclass(frozen=True)
class Core:
    """What a server cost and what its core did during a run: the server's CPU a request
    (`/proc/<pid>/stat`, every thread), and its core's idle share (`/proc/stat`)."""

    cpu_us: float  # the server's user and system CPU, per request answered
    idle: float  # the core's share with nothing to run, the disk waits included
    disk: float  # of which a task of its was waiting for the disk (iowait)


def core_times() -> list[int]:
    """The servers' core's times since boot: user, nice, system, idle, iowait, …"""
    for line in Path("/proc/stat").read_text().splitlines():
        name, *times = line.split()
        if name == f"cpu{SERVER_CPU}":
            return [int(value) for value in times]
    raise RuntimeError(f"no cpu{SERVER_CPU} in /proc/stat")


def wrk_watched(url: str, pid: int, seconds: int) -> tuple[float, Core]:
    """`wrk` against server `pid`, and what it cost the server and its core: the ratio of two
    servers moves with what each spends a request, and with how long each waits (for a disk
    sync, a database's answer) with its core idle even at saturation."""
    before, cpu_before = core_times(), paced.cpu_seconds(pid)
    rps = wrk(url, seconds)
    cpu = paced.cpu_seconds(pid) - cpu_before
    spent = [after - earlier for after, earlier in zip(core_times(), before, strict=True)]
    total = sum(spent[:8]) or 1  # guest times are counted in user already
    requests = rps * seconds or 1
    return rps, Core(cpu * 1e6 / requests, (spent[3] + spent[4]) / total, spent[4] / total)


def disk_sync_ms(directory: Path, syncs: int = 200) -> float:
    """The disk's sync as a SQLite commit of the bench's makes it: 25 pages of 4 KiB written
    over a file, then `fdatasync`; the median in ms. A webhook on SQLite waits for it and the
    bare endpoint does not, and it varies with the machine's other tenants."""
    path = directory / "sync-probe"
    page = b"\0" * 4096
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        times = []
        for _ in range(syncs):
            for n in range(25):
                os.pwrite(descriptor, page, n * len(page))
            started = time.perf_counter()
            os.fdatasync(descriptor)
            times.append((time.perf_counter() - started) * 1000)
        return statistics.median(times)
    finally:
        os.close(descriptor)
        path.unlink()


def ingest(
    url: str,
    pid: int,
    yardstick: Yardstick | None,
    seconds: int,
    rounds: int,
    *,
    delivers: bool = False,
) -> Figures:
    """Requests per second at saturation of server `pid`. With a yardstick, in `rounds`
    rounds of both in turn: the machine's speed drifts within minutes, a round's two runs
    share its phase. `delivers`: the server goes on working after its round (`serve`'s
    worker delivering what it took in), on the servers' core, so each bare round waits."""
    if yardstick is None:
        return Figures(rps=wrk(url, seconds))
    ours, bare, ratios, cores, bare_cores, behind = [], [], [], [], [], []
    each = max(3, seconds // 2)
    if delivers:
        settle(pid)
    for _ in range(rounds):
        rps, core = wrk_watched(yardstick.url, yardstick.pid, each)
        bare.append(rps)
        bare_cores.append(core)
        rps, core = wrk_watched(url, pid, each)
        ours.append(rps)
        cores.append(core)
        ratios.append(ours[-1] / bare[-1])
        if delivers:  # the worker delivers what the round took in (the next round waits)
            behind.append(settle(pid))
    return Figures(
        rps=statistics.median(ours),
        bare_rps=statistics.median(bare),
        ratio=statistics.median(ratios),
        extra={
            "ratios": ratios,
            "cores": cores,
            "bare_cores": bare_cores,
            "behind": behind,
            "each": each,
        },
    )


def server_figures(
    port: int, pid: int, tag: str, seconds: int, yardstick: Yardstick | None, rounds: int
) -> Figures:
    url = f"http://127.0.0.1:{port}{PATH}"
    pin(pid, SERVER_CPU)
    wrk(url, 2)  # warm up
    figures = ingest(url, pid, yardstick, seconds, rounds)
    if yardstick is not None:
        # Latency at half the bridge's own rate, for both: at half the bare endpoint's the
        # bridge would be past its saturation, and measure only its queue.
        half = figures.rps / 2
        figures.half_p50, figures.half_p99 = open_loop(port, half, seconds)
        bare_port = int(yardstick.url.split(":")[2].split("/")[0])
        figures.extra["bare_half"] = open_loop(bare_port, half, seconds)
        figures.extra["half_rate"] = half
    figures.body_1000 = min(time_to_2xx(url, body(1000, f"{tag}k{i}_")) for i in range(3))
    figures.body_7000 = min(time_to_2xx(url, body(7000, f"{tag}m{i}_")) for i in range(3))
    figures.rss_mb = peak_rss_mb(pid)
    return figures


@contextmanager
def bare(seconds: int, stack: Runtime) -> Iterator[Yardstick]:
    """The bare endpoint on `stack` measured, and kept running for the bridge's paired
    rounds."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.bare", str(port), stack.loop, stack.http]
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline, "bare server did not start"
                time.sleep(0.1)
        figures = server_figures(port, process.pid, "bare", seconds, None, 1)
        yield Yardstick(f"http://127.0.0.1:{port}{PATH}", process.pid, figures)
    finally:
        process.terminate()
        process.wait()


def end_to_end(slack: FakeSlack, url: str, count: int, rate: float) -> tuple[float, float]:
    """Webhook sent → post arrived at the fake Slack, for `count` messages at a light rate."""
    sent: dict[str, float] = {}
    with httpx.Client(timeout=30) as client:
        for n in range(count):
            due = time.monotonic()
            content = f"e2e-{n}-end"
            sent[content] = due
            event = {
                "webhook_id": f"e2e_{n}",
                "webhook_type": "inbox_message",
                "message": {"sender": f"3247{n % 20:07d}", "receiver": "3246", "content": content},
            }
            assert client.post(url, json=[event]).is_success
            time.sleep(max(0.0, due + 1 / rate - time.monotonic()))
    slack.wait_for_posts(count, timeout=60)
    latencies = []
    for post in slack.posts():
        found = re.search(r"e2e-\d+-end", json.dumps(post.blocks) + (post.text or ""))
        if found:
            latencies.append((post.at - sent[found.group(0)]) * 1000)
    assert len(latencies) == count, "every message posted exactly once"
    return percentile(latencies, 0.5), percentile(latencies, 0.99)


def bridge_env(workdir: Path, slack: FakeSlack) -> dict[str, str]:
    """The bridge's environment in the bench: its config, token and the fake Slack."""
    config = workdir / "bench.yaml"
    config.write_text(CONFIG)
    return {
        "BRIDGE_CONFIG": str(config),
        "SMSTOOLS_WEBHOOK_TOKEN": TOKEN,
        "SLACK_BOT_TOKEN": "xoxb-test",
        "SLACK_API_URL": slack.api_url,
        "LOG_LEVEL": "WARNING",
    }


def bridge(
    database_url: str,
    workdir: Path,
    seconds: int,
    yardstick: Yardstick,
    stack: Runtime,
    rounds: int,
) -> Figures:
    with FakeSlack() as slack:
        env = {**bridge_env(workdir, slack), "DATABASE_URL": database_url}
        # End to end first: a light load's latency, measured before the floods below leave
        # PostgreSQL checkpointing and vacuuming their rows on the same machine.
        e2e_p50, e2e_p99, rss_mb = served_end_to_end(
            slack, env, database_url, workdir, stack, seconds
        )
        # Ingest figures with the web process alone (a worker would post 100,000s of jobs).
        on_stack = ["--loop", stack.loop, "--http", stack.http]
        web = BridgeProcess(["serve", "--no-worker", *on_stack], env, workdir / "web.log")
        web.start()
        try:
            tag = f"b{int(time.time()) % 100000}"
            figures = server_figures(web.port or 0, web.pid, tag, seconds, yardstick, rounds)
        finally:
            stop(web)
        figures.serve = serve_ingest(database_url, workdir, env, stack, yardstick, rounds, seconds)
        figures.e2e_p50, figures.e2e_p99 = e2e_p50, e2e_p99
        figures.rss_mb = max(figures.rss_mb, rss_mb)
    return figures


def serve_ingest(
    database_url: str,
    workdir: Path,
    env: dict[str, str],
    stack: Runtime,
    yardstick: Yardstick,
    rounds: int,
    seconds: int,
) -> Figures:
    """Ingest of `serve` with its worker (the default, one process) delivering to the
    console, on a fresh database, in paired rounds with the bare endpoint as web only is."""
    config = workdir / "console.yaml"
    config.write_text(CONSOLE)
    fresh = fresh_database(database_url, workdir, stack, "serve")
    serve_env = {**env, "BRIDGE_CONFIG": str(config), "DATABASE_URL": fresh}
    on_stack = ["--loop", stack.loop, "--http", stack.http]
    full = BridgeProcess(["serve", *on_stack], serve_env, workdir / "serve.log").start()
    try:
        url = f"{full.url}{PATH}"
        pin(full.pid, SERVER_CPU)
        wrk(url, 2)  # warm up
        # The bare endpoint's rounds wait for the worker to have delivered the last round's
        # webhooks: it shares their core, and would slow them.
        return ingest(url, full.pid, yardstick, seconds, rounds, delivers=True)
    finally:
        stop(full)


def served_end_to_end(
    slack: FakeSlack,
    env: dict[str, str],
    database_url: str,
    workdir: Path,
    stack: Runtime,
    seconds: int,
) -> tuple[float, float, float]:
    """End to end on a fresh database: `serve` with its worker posting to the fake Slack, 20
    webhooks a second for `seconds`; p50 and p99 in ms, and the process's peak RSS."""
    fresh = fresh_database(database_url, workdir, stack)
    on_stack = ["--loop", stack.loop, "--http", stack.http]
    full = BridgeProcess(["serve", *on_stack], {**env, "DATABASE_URL": fresh}, workdir / "full.log")
    full.start()
    try:
        pin(full.pid, SERVER_CPU)
        p50, p99 = end_to_end(slack, f"{full.url}{PATH}", count=seconds * 20, rate=20)
        return p50, p99, peak_rss_mb(full.pid)
    finally:
        stop(full)


def end_to_end_only(database_url: str, workdir: Path, stack: Runtime, seconds: int) -> None:
    """`--e2e-only`: the end-to-end figure alone, printed (for checks; writes no file)."""
    with FakeSlack() as slack:
        env = bridge_env(workdir, slack)
        p50, p99, _ = served_end_to_end(slack, env, database_url, workdir, stack, seconds)
    database = database_url.split(":")[0]
    print(f"end to end at 20 req/s on {database}: p50 {p50:.1f} ms, p99 {p99:.1f} ms")


def fresh_database(url: str, workdir: Path, stack: Runtime, purpose: str = "e2e") -> str:
    if url.startswith("sqlite"):
        return f"sqlite:///{workdir / f'{purpose}.db'}"
    return asyncio.run(postgres_database(f"{purpose}_{stack.loop}_{stack.http}")) or url


async def postgres_database(suffix: str) -> str | None:
    try:
        admin = await asyncpg.connect(POSTGRES_ADMIN, timeout=3)
    except (OSError, asyncpg.PostgresError):
        return None
    name = f"bridge_bench_{os.getpid()}_{suffix}"
    await admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    return POSTGRES_ADMIN.rsplit("/", 1)[0] + "/" + name


def wait_for_quiet(limit: float, patience: float, say: Callable[[str], None]) -> float:
    """Wait (up to `patience` seconds) for the 1-minute load to drop below `limit`."""
    deadline = time.monotonic() + patience
    while True:
        load = float(Path("/proc/loadavg").read_text().split()[0])
        if load < limit or time.monotonic() > deadline:
            return load
        say(f"load {load:.2f}: waiting for it to drop below {limit} ...")
        time.sleep(15)


def spread(ratios: list[float]) -> str:
    return f"rounds {min(ratios):.2f}–{max(ratios):.2f}"


def ratio(value: float, yardstick: float) -> str:
    return f"{value / yardstick:.2f}×" if yardstick else "—"


def target(targets: dict[str, float], database: str) -> str:
    return f"≥ {targets[database]}×" if database in targets else "—"


def ingest_cells(figures: Figures) -> str:
    """The bridge's and the ratio's cells of an ingest row."""
    return f"{figures.rps:.0f} req/s | {figures.ratio:.3f}× ({spread(figures.extra['ratios'])})"


def core_cell(cores: list[Core]) -> str:
    """A server's CPU a request and its core's idle share in its rounds (medians, with the
    rounds' range), and how much of the idle time was waiting for the disk."""
    cpu = sorted(core.cpu_us for core in cores)
    idle = sorted(core.idle for core in cores)
    disk = statistics.median(core.disk for core in cores)
    return (
        f"{statistics.median(cpu):.0f} µs ({cpu[0]:.0f}–{cpu[-1]:.0f}); "
        f"{statistics.median(idle):.0%} ({idle[0]:.0%}–{idle[-1]:.0%}), the disk {disk:.0%}"
    )


def core_row(what: str, figures: Figures) -> str:
    """A table row: what each side spent a request in the rounds of `what`, and how much of
    the servers' core it left idle at saturation."""
    bare, ours = figures.extra["bare_cores"], figures.extra["cores"]
    spent = statistics.median(core.cpu_us for core in ours) / statistics.median(
        core.cpu_us for core in bare
    )
    return (
        f"| {what}: CPU a request; the core idle (waiting for the disk) | {core_cell(bare)} | "
        f"{core_cell(ours)} | {spent:.2f}× the CPU | — |"
    )


def behind_row(figures: Figures) -> str:
    """A table row: how long after each of `serve`'s rounds (seconds at saturation)
    its worker went on delivering what the round took in, and so how many webhooks a second
    it stored and delivered from the round's start to its last delivery."""
    behind, each = sorted(figures.extra["behind"]), figures.extra["each"]
    taken = figures.rps * each
    done = taken / (each + statistics.median(behind))
    return (
        "| `serve`: its worker still delivering the round's webhooks after it (median); "
        f"stored and delivered from the round's start | — | {statistics.median(behind):.1f} s "
        f"({behind[0]:.1f}–{behind[-1]:.1f}); {done:.0f} webhooks/s | — | — |"
    )


def table(
    name: str, database: str, bare_figures: Figures, figures: Figures, rounds: int
) -> list[str]:
    b, f = bare_figures, figures

    def ms(value: float | None) -> str:
        return "—" if value is None else f"{value:.1f} ms"

    e2e = f"{ms(f.e2e_p50)} / {ms(f.e2e_p99)}"
    bare_p50, bare_p99 = f.extra["bare_half"]
    return [
        f"### {name}",
        "",
        "| figure | bare Starlette | bridge | bridge ÷ bare | target |",
        "| --- | --- | --- | --- | --- |",
        f"| ingest, web only, 16 connections (median of {rounds} rounds) | "
        f"{f.bare_rps:.0f} req/s | {ingest_cells(f)} | {target(WEB_TARGET, database)} |",
        core_row("web only", f),
        *(
            [
                f"| ingest, `serve` with its worker (console), 16 connections (median of "
                f"{rounds} rounds) | {f.serve.bare_rps:.0f} req/s | {ingest_cells(f.serve)} | "
                f"{target(SERVE_TARGET, database)} |",
                core_row("`serve`", f.serve),
                behind_row(f.serve),
            ]
            if f.serve
            else []
        ),
        f"| p50 / p99 at {f.extra['half_rate']:.0f} req/s (half the bridge's web-only rate) | "
        f"{ms(bare_p50)} / {ms(bare_p99)} | {ms(f.half_p50)} / {ms(f.half_p99)} | "
        f"{ratio(f.half_p99, bare_p99)} (p99) | p99 < 25 ms |",
        f"| 1,000-event body, time to 2xx | {ms(b.body_1000)} | {ms(f.body_1000)} | "
        f"{ratio(f.body_1000, b.body_1000)} | < 150 ms |",
        f"| 7,000-event body (~1 MiB), time to 2xx | {ms(b.body_7000)} | {ms(f.body_7000)} | "
        f"{ratio(f.body_7000, b.body_7000)} | < 1 s |",
        f"| end to end, webhook → Slack post, p50 / p99 at 20 req/s | — | {e2e} | — | "
        "p50 < 10 ms, p99 < 50 ms |",
        f"| peak RSS | {b.rss_mb:.0f} MB | {f.rss_mb:.0f} MB | {ratio(f.rss_mb, b.rss_mb)} | "
        "< 150 MB |",
        "",
    ]


def side_by_side(results: list[tuple[Runtime, str, Figures]], rounds: int) -> list[str]:
    """One line per stack and database: what the compiled stack gains, on both sides."""
    lines = [
        "## The stacks side by side",
        "",
        f"Ingest, 16 connections, median of {rounds} paired rounds each.",
        "",
        "| stack | database | bare Starlette | bridge, web only | bridge ÷ bare | "
        "bridge, `serve` (console) | bridge ÷ bare |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for stack, name, figures in results:
        serve = ingest_cells(figures.serve) if figures.serve else "— | —"
        lines.append(
            f"| {stack.describe()} | {name} | {figures.bare_rps:.0f} req/s | "
            f"{ingest_cells(figures)} | {serve} |"
        )
    return [*lines, ""]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="3-second runs instead of 10")
    parser.add_argument("--seconds", type=int, default=None, help="seconds per run (over --quick)")
    parser.add_argument(
        "--rounds", type=int, default=ROUNDS, help=f"paired ingest rounds (default {ROUNDS})"
    )
    parser.add_argument(
        "--stacks",
        choices=("production", "both"),
        default="production",
        help="production: uvloop + httptools when installed; both: and asyncio + h11 beside it",
    )
    parser.add_argument("--output", type=Path, default=Path("docs/benchmarks.md"))
    parser.add_argument("--no-wait", action="store_true", help="do not wait for a quiet machine")
    parser.add_argument("--no-paced", action="store_true", help="skip the paced-delivery run")
    parser.add_argument("--no-postgres", action="store_true", help="SQLite only")
    parser.add_argument("--e2e-only", action="store_true", help="end to end only, printed")
    arguments = parser.parse_args()
    seconds = arguments.seconds or (3 if arguments.quick else 10)
    if arguments.e2e_only:
        with tempfile.TemporaryDirectory() as directory:
            workdir = Path(directory)
            end_to_end_only(f"sqlite:///{workdir / 'bench.db'}", workdir, choose(), seconds)
            if not arguments.no_postgres and (url := asyncio.run(postgres_database("e2e"))):
                end_to_end_only(url, workdir, choose(), seconds)
        return
    rounds = max(1, arguments.rounds)
    production = choose()
    stacks = [production] + ([PURE] if arguments.stacks == "both" and PURE != production else [])
    load = wait_for_quiet(1.0, 0 if arguments.no_wait else 600, print)
    tables: list[str] = []
    ingested: list[tuple[Runtime, str, Figures]] = []
    paced_results: list[tuple[str, dict[str, float]]] = []
    with tempfile.TemporaryDirectory() as directory:
        syncs = [disk_sync_ms(Path(directory))]
        for stack in stacks:
            workdir = Path(directory) / f"{stack.loop}-{stack.http}"
            workdir.mkdir()
            print(f"benchmarking the bare endpoint on {stack.describe()} ...", flush=True)
            with bare(seconds, stack) as yardstick:
                targets = [("SQLite", f"sqlite:///{workdir / 'bench.db'}")]
                tag = f"{stack.loop}_{stack.http}"
                postgres = None
                if not arguments.no_postgres:
                    postgres = asyncio.run(postgres_database(f"ingest_{tag}"))
                if postgres:
                    targets.append(("PostgreSQL", postgres))
                for name, url in targets:
                    print(f"benchmarking {name} on {stack.describe()} ...", flush=True)
                    figures = bridge(url, workdir, seconds, yardstick, stack, rounds)
                    heading = f"{name}, {stack.describe()}"
                    tables += table(heading, name, yardstick.figures, figures, rounds)
                    ingested.append((stack, name, figures))
            if arguments.no_paced:
                continue
            for name, url in targets:
                print(f"benchmarking paced delivery on {name}, {stack.describe()} ...", flush=True)
                if name == "PostgreSQL":
                    fresh = asyncio.run(postgres_database(f"paced_{tag}")) or url
                else:
                    fresh = f"sqlite:///{workdir / 'paced.db'}"
                result = paced.measure_paced(fresh, workdir, TOKEN, stack)
                paced_results.append((f"{name}, {stack.describe()}", result))
        syncs.append(disk_sync_ms(Path(directory)))
    if len(stacks) > 1:
        tables = side_by_side(ingested, rounds) + tables
    if paced_results:
        tables += paced.paced_table(paced_results, Path("/proc/loadavg").read_text().split()[0])
    cpu = Path("/proc/cpuinfo").read_text()
    model = re.search(r"model name\s*:\s*(.*)", cpu)
    lines = [
        "# Benchmarks",
        "",
        "Measured by `make bench` (`bench/run.py`): `smsbridge serve` as a real process next to",
        "a bare Starlette endpoint (`bench/bare.py`, parses the JSON and answers 200) under the",
        "same uvicorn settings and on the same event loop and HTTP parser (the stack: uvloop +",
        "httptools as installed by default; asyncio + h11, uvicorn's pure-Python fallback, with",
        "`--stacks both`), in the same run; servers pinned to CPU 0, load generators to",
        "CPU 1. Ingest: wrk, 1 thread, 16 connections, single-event inbox webhooks, each with",
        f"its own webhook_id, in {rounds} rounds of the bare endpoint and then the bridge, half",
        "the run's seconds each (the bare one keeps running beside the bridge); the ratio is the",
        "median of the rounds' ratios.",
        "Latency: an open-loop client (`bench/openloop.py`) at half the bridge's web-only",
        "rate, on both servers, measured from when each request was due. Bodies: best of 3.",
        "Ingest is measured twice: the web process alone (`serve --no-worker`), and `serve` with",
        "its worker (one process, delivering to the console) on a fresh database. At",
        "saturation the worker shares the core with the web side and falls behind: after each",
        "of `serve`'s rounds the bench waits for it to deliver what the round took in, and says",
        "how long that took (until its CPU falls under 5 % of a core).",
        "End to end: `serve` with its worker posting to the fake Slack, before the ingest runs.",
        "Under each ingest row, from the same rounds: each server's CPU a request (user and",
        "system, every thread, `/proc/<pid>/stat`), and the share of the servers' core with",
        "nothing to run (`/proc/stat`), of it the time its tasks waited for the disk (iowait):",
        "a server that waits for a disk sync or a database's answer leaves its core idle even",
        "at saturation, and the bare endpoint waits for neither. The ratio follows both.",
        "",
        f"Machine: {os.cpu_count()} × {model.group(1) if model else platform.machine()}, "
        f"Python {platform.python_version()}, {platform.system()} {platform.release()}; "
        f"{time.strftime('%Y-%m-%d %H:%M')}; 1-minute load before the run: {load:.2f}; "
        f"{seconds}-second runs; stacks: {', '.join(stack.describe() for stack in stacks)}; "
        f"the disk's sync (`fdatasync` after 25 pages of 4 KiB, median of 200): "
        f"{syncs[0]:.2f} ms at the start, {syncs[-1]:.2f} ms at the end.",
        "",
        *tables,
    ]
    text = "\n".join(lines)
    print(text)
    marker = "<!-- profile -->"
    old = arguments.output.read_text() if arguments.output.exists() else ""
    kept = old[old.index(marker) :] if marker in old else ""
    arguments.output.write_text(text + ("\n" + kept if kept else ""))


if __name__ == "__main__":
    main()
