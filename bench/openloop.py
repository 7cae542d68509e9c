"""An open-loop load generator: sends single-event webhooks at a fixed rate whatever the
answers' pace, and measures each latency from the moment its request was due (so a slow
answer delays no measurement: no coordinated omission). Meant to run pinned to one core:

    taskset -c 1 python -m bench.openloop HOST PORT PATH RATE SECONDS

Prints the latencies in milliseconds as JSON.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
import uuid

# Each connection has one request at a time, but uvicorn counts a request's task until its
# done-callback runs, which may be after the answer arrived and the next request came in: 40
# connections stay under the servers' 100 (`BRIDGE_MAX_CONNECTIONS`), where 64 drew a 503.
CONNECTIONS = 40


def request(host: str, path: str, number: int, prefix: str) -> bytes:
    body = json.dumps(
        [
            {
                "webhook_id": f"ol_{prefix}_{number}",
                "webhook_type": "inbox_message",
                "username": "bench",
                "message": {
                    "id": str(number),
                    "date": "2026-11-26 10:00:00",
                    "sender": f"32470{number % 100:06d}",
                    "receiver": "32460200000",
                    "content": "benchmark message",
                    "type": "sms",
                },
            }
        ]
    ).encode()
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def connection(
    host: str, port: int, path: str, due: list[float], lane: int, latencies: list[float]
) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    prefix = uuid.uuid4().hex[:8]
    for number in range(lane, len(due), CONNECTIONS):
        delay = due[number] - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        writer.write(request(host, path, number, prefix))
        head = await reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        await reader.readexactly(length)
        if not head.startswith(b"HTTP/1.1 2"):
            raise SystemExit(f"answer not 2xx: {head[:40]!r}")
        latencies.append((time.perf_counter() - due[number]) * 1000)
    writer.close()


async def main(host: str, port: int, path: str, rate: float, seconds: float) -> None:
    start = time.perf_counter() + 0.2
    due = [start + number / rate for number in range(int(rate * seconds))]
    latencies: list[float] = []
    await asyncio.gather(
        *(connection(host, port, path, due, lane, latencies) for lane in range(CONNECTIONS))
    )
    print(json.dumps(latencies))


if __name__ == "__main__":
    host, port, path, rate, seconds = sys.argv[1:6]
    asyncio.run(main(host, int(port), path, float(rate), float(seconds)))
