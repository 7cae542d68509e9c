"""Paced delivery: how close one worker comes to Slack's ceiling of one post a second per
channel across 50 channels, each with a backlog (issue 14). Run by `make bench` after the
ingest figures; the fake Slack enforces 1 post/s per channel with no burst. Alone:

    .venv/bin/python -m bench.paced [--postgres]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
from pathlib import Path
from typing import Any

import httpx

from bridge.runtime import Runtime, choose
from testkit.fakes.slack import FakeSlack
from testkit.processes import BridgeProcess

PACED_CHANNELS, PACED_PER_CHANNEL = 50, 20
# The worker's CPU at 50 posts/s, % of a core, before issue 28 (2026-12-04): SQLite, PostgreSQL.
CPU_BASELINE = {"SQLite": 75.0, "PostgreSQL": 66.0}
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User and system CPU of process `pid` so far, all its threads (`/proc/PID/stat`)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()  # after the command's name, which may hold spaces
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime


def paced_config(channels: int) -> str:
    lines = ["destinations:"]
    lines += [f"  c{n}: {{slack: {{channel: C0PACE{n:02d}}}}}" for n in range(channels)]
    lines += ["routes:"]
    for n in range(channels):
        lines += [f'  - match: {{receiver: "3246{n:07d}"}}', f"    to: [c{n}]"]
    return "\n".join(lines) + "\n"


def paced_event(channel: int, number: int) -> dict[str, Any]:
    """A customer of its own (nothing to combine) writing to the line of `channel`."""
    return {
        "webhook_id": f"wh_paced_{channel}_{number}",
        "webhook_type": "inbox_message",
        "username": "bench",
        "message": {
            "id": f"paced-{channel}-{number}",
            "date": "2026-11-26 10:00:00",
            "sender": f"3247{channel:03d}{number:04d}",
            "receiver": f"3246{channel:07d}",
            "content": f"paced message {number}",
            "type": "sms",
        },
    }


def measure_paced(database_url: str, workdir: Path, token: str, stack: Runtime) -> dict[str, float]:
    """50 channels at Slack's 1 post/s each, enforced by the fake with no burst: how close
    one worker (on `stack`'s loop) comes to the 50 posts/s ceiling once every channel has a
    backlog."""
    config = workdir / "paced.yaml"
    config.write_text(paced_config(PACED_CHANNELS))
    total = PACED_CHANNELS * PACED_PER_CHANNEL
    with FakeSlack() as slack:
        slack.set_rate_limit(1.0)
        env = {
            "BRIDGE_CONFIG": str(config),
            "DATABASE_URL": database_url,
            "SMSTOOLS_WEBHOOK_TOKEN": token,
            "SLACK_BOT_TOKEN": "xoxb-test",
            "SLACK_API_URL": slack.api_url,
            "LOG_LEVEL": "WARNING",
        }
        web_args = ["serve", "--no-worker", "--loop", stack.loop, "--http", stack.http]
        web = BridgeProcess(web_args, env, workdir / "paced-web.log").start()
        url = f"{web.url}/webhooks/smstools/{token}"
        with httpx.Client(timeout=30) as client:
            for number in range(PACED_PER_CHANNEL):
                batch = [paced_event(channel, number) for channel in range(PACED_CHANNELS)]
                assert client.post(url, json=batch).status_code == 200
        web.stop()
        worker_args = ["worker", "--loop", stack.loop]
        worker = BridgeProcess(worker_args, env, workdir / "paced-worker.log").start()
        slack.wait_for_posts(1, timeout=60)
        cpu_first = cpu_seconds(worker.pid)  # start-up (imports, connecting) left out
        first = min(post.at for post in slack.posts())
        slack.wait_for_posts(total, timeout=600)
        cpu_last = cpu_seconds(worker.pid)
        last = max(post.at for post in slack.posts())
        worker.stop()
        throttled = sum(1 for call in slack.calls("chat.postMessage") if call.status == 429)
        assert len(slack.posts()) == total, "a benchmark run must also deliver exactly once"
    # n posts per channel at 1/s span n - 1 seconds at best: the ceiling's own time.
    ceiling = (PACED_PER_CHANNEL - 1) / (last - first)
    return {
        "posts": total,
        "of_ceiling": ceiling,
        "throttled": throttled,
        "seconds": last - first,
        "cpu": (cpu_last - cpu_first) / (last - first),  # share of one core
        "cpu_per_post_ms": (cpu_last - cpu_first) / (total - 1) * 1000,
    }


def paced_table(results: list[tuple[str, dict[str, float]]], load: str) -> list[str]:
    lines = [
        "## Paced delivery",
        "",
        f"{PACED_CHANNELS} Slack channels, {PACED_PER_CHANNEL} waiting messages each (one per",
        "customer), the fake Slack enforcing 1 post/s per channel with no burst; one worker from",
        f"its start, with the platform's default pace. The ceiling is {PACED_CHANNELS} posts/s;",
        "the share is (posts per channel − 1) / (last post − first post).",
        "The worker's CPU: user and system time of its process (`/proc/PID/stat`) from the",
        "first post to the last, as a share of one core; the target is half of what it was",
        "before issue 28 (SQLite 75 %, PostgreSQL 66 %).",
        f"1-minute load average when the run ended: {load}.",
        "",
        "| database, stack | posts | share of the ceiling | answered 429 | worker CPU | target |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, result in results:
        baseline = next(v for k, v in CPU_BASELINE.items() if name.startswith(k))
        lines.append(
            f"| {name} | {result['posts']:.0f} in {result['seconds']:.1f} s | "
            f"{result['of_ceiling']:.2f}× | {result['throttled']:.0f} "
            f"({result['throttled'] / result['posts']:.1%}) | {result['cpu']:.0%} of a core "
            f"({result['cpu_per_post_ms']:.2f} ms a post) | ≤ {baseline / 2:.0f} % (was "
            f"{baseline:.0f} %) |"
        )
    return [*lines, ""]


def main() -> None:
    """One paced run on SQLite, or on a fresh PostgreSQL database (`--postgres`), printed."""
    from bench.run import TOKEN, postgres_database  # the bench's own; run imports this module

    parser = argparse.ArgumentParser()
    parser.add_argument("--postgres", action="store_true")
    arguments = parser.parse_args()
    stack = choose()
    with tempfile.TemporaryDirectory() as directory:
        workdir = Path(directory)
        if arguments.postgres:
            url = asyncio.run(postgres_database("paced_alone"))
            assert url, "PostgreSQL does not answer"
            name = "PostgreSQL"
        else:
            url, name = f"sqlite:///{workdir / 'paced.db'}", "SQLite"
        result = measure_paced(url, workdir, TOKEN, stack)
    print("\n".join(paced_table([(f"{name}, {stack.describe()}", result)], "—")))


if __name__ == "__main__":
    main()
