"""Benchmark: webhook answer latency, ingest throughput and end-to-end delivery rate.

Runs `smsbridge serve` as a real process against the fake Slack server (`testkit.fakes`), on
SQLite and (when it answers) PostgreSQL, and writes the figures to docs/benchmarks.md.

    make bench            # or: .venv/bin/python -m bench.run [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from testkit.fakes.slack import FakeSlack
from testkit.processes import BridgeProcess

TOKEN = "bench-token"
POSTGRES_ADMIN = os.environ.get(
    "BRIDGE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
CONFIG = """
destinations:
  support: {slack: {channel: C0BENCH}, max_rate: unlimited}
default: [support]
"""


def event(number: int, conversations: int) -> dict[str, Any]:
    return {
        "webhook_id": f"wh_bench_{number}",
        "webhook_type": "inbox_message",
        "username": "bench",
        "message": {
            "id": str(number),
            "date": "2026-11-26 10:00:00",
            "sender": f"32470{number % conversations:06d}",
            "receiver": "32460200000",
            "content": f"benchmark message {number}",
            "type": "sms",
        },
    }


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def measure(database_url: str, workdir: Path, scale: int) -> dict[str, float]:
    config = workdir / "bench.yaml"
    config.write_text(CONFIG)
    with FakeSlack() as slack:
        env = {
            "BRIDGE_CONFIG": str(config),
            "DATABASE_URL": database_url,
            "SMSTOOLS_WEBHOOK_TOKEN": TOKEN,
            "SLACK_BOT_TOKEN": "xoxb-test",
            "SLACK_API_URL": slack.api_url,
            "LOG_LEVEL": "WARNING",
        }
        results: dict[str, float] = {}
        # 1. Answer latency, web process alone (no delivery competing for the CPU).
        web = BridgeProcess(["serve", "--no-worker"], env, workdir / "web.log").start()
        url = f"{web.url}/webhooks/smstools/{TOKEN}"
        latencies = []
        with httpx.Client(timeout=30) as client:
            for number in range(scale):
                started = time.perf_counter()
                response = client.post(url, json=[event(number, 100)])
                latencies.append(time.perf_counter() - started)
                assert response.status_code == 200
            results["latency_p50_ms"] = percentile(latencies, 0.50) * 1000
            results["latency_p99_ms"] = percentile(latencies, 0.99) * 1000
            # 2. Ingest throughput: batches of 50 events.
            batches = [
                [event(scale + b * 50 + i, 100) for i in range(50)] for b in range(scale // 10)
            ]
            started = time.perf_counter()
            for batch in batches:
                assert client.post(url, json=batch).status_code == 200
            results["ingest_events_per_s"] = len(batches) * 50 / (time.perf_counter() - started)
        web.stop()
        total = scale + len(batches) * 50
        # 3. Delivery: one worker drains everything queued above into fake Slack.
        started = time.perf_counter()
        worker = BridgeProcess(["worker"], env, workdir / "worker.log").start()
        slack.wait_for_posts(total, timeout=600)
        results["delivery_posts_per_s"] = total / (time.perf_counter() - started)
        worker.stop()
        results["events"] = total
        assert len(slack.posts()) == total, "a benchmark run must also deliver exactly once"
    return results


async def postgres_database() -> str | None:
    try:
        admin = await asyncpg.connect(POSTGRES_ADMIN, timeout=3)
    except (OSError, asyncpg.PostgresError):
        return None
    name = f"bridge_bench_{os.getpid()}"
    await admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    return POSTGRES_ADMIN.rsplit("/", 1)[0] + "/" + name


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="100 instead of 1000 requests")
    parser.add_argument("--output", type=Path, default=Path("docs/benchmarks.md"))
    scale = 100 if parser.parse_args().quick else 1000
    output = parser.parse_args().output
    rows = []
    with tempfile.TemporaryDirectory() as directory:
        workdir = Path(directory)
        targets = [("SQLite", f"sqlite:///{workdir / 'bench.db'}")]
        postgres = asyncio.run(postgres_database())
        if postgres:
            targets.append(("PostgreSQL", postgres))
        for name, url in targets:
            print(f"benchmarking {name} ...", flush=True)
            rows.append((name, measure(url, workdir, scale)))
    cpu = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip()
    lines = [
        "# Benchmarks",
        "",
        "Measured by `make bench` (`bench/run.py`): `smsbridge serve` and `smsbridge worker` as",
        "real processes, the fake Slack server of the tests on loopback, one client sending",
        "sequentially. Regenerate after any change on the webhook path or the worker.",
        "",
        f"Machine: {cpu} cores, Python {platform.python_version()}, {platform.machine()}; "
        f"{time.strftime('%Y-%m-%d')}; {scale} single-event requests, then "
        f"{scale // 10} batches of 50 events; 100 conversations.",
        "",
        "| database | answer p50 | answer p99 | ingest (batches of 50) | delivery, 1 worker |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, result in rows:
        lines.append(
            f"| {name} | {result['latency_p50_ms']:.1f} ms | {result['latency_p99_ms']:.1f} ms | "
            f"{result['ingest_events_per_s']:.0f} events/s | "
            f"{result['delivery_posts_per_s']:.0f} posts/s ({result['events']:.0f} posts) |"
        )
    lines += [
        "",
        "Answer latency is the whole HTTP round trip of a one-event webhook, stored and",
        "committed (SQLite with `synchronous=FULL`: every answer waits for an fsync). Delivery",
        "counts from the worker's start until the fake Slack holds every post: claim, thread",
        "lookup, post, record, per job, with up to 16 jobs in flight and no rate limit (real",
        "Slack allows about one post per second per channel, which the pacer respects).",
        "",
    ]
    output.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
