"""What every HTTP edge shares (Smstools webhooks, Slack events, Telegram updates): a body
read within a deadline and a size, and JSON errors.

A client has `timeout` seconds to send its whole body once its headers are in (cut within an
eighth of that past it); a refusal sent before the body was read to its end closes the
connection, so a client trickling bytes holds nothing for long.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from starlette.responses import JSONResponse
from starlette.types import Receive, Scope

from bridge.settings import DEFAULT_BODY_TIMEOUT

RETRY_AFTER = "5"  # seconds, on a 503: the database could not take the request now
MAX_BODY = 1024 * 1024  # bytes: more is 413, before the rest is read


@dataclass
class _Read:
    deadline: float  # loop time
    cut: bool = False  # cancelled by the sweep for overrunning


class BodyReader:
    """Reads request bodies within `limit` bytes and `timeout` seconds.

    One timer serves every read under way (the app shares one reader among its edges): a sweep
    every `timeout / 8` cancels the reads past their deadline, and stops while nothing is
    read. One timer for all is cheaper on the hot path than a timer per request
    (`asyncio.timeout`).
    """

    def __init__(self, timeout: float = DEFAULT_BODY_TIMEOUT, limit: int = MAX_BODY) -> None:
        self.timeout, self.limit = timeout, limit
        self.tick = timeout / 8
        self._reads: dict[asyncio.Task[object], _Read] = {}
        self._sweep: asyncio.TimerHandle | None = None

    async def read(self, receive: Receive, declared: str | None) -> bytes | JSONResponse:
        """The whole body, or the error to answer: 413 past `limit` bytes (`declared` in the
        Content-Length header, or sent), 408 when it did not arrive in time, 400 when the
        client went away."""
        # isascii: "²" is a digit to `isdigit` and not a number to `int`.
        if declared and declared.isascii() and declared.isdigit() and int(declared) > self.limit:
            return self._too_large()
        loop = asyncio.get_running_loop()
        task = asyncio.current_task(loop)
        assert task is not None
        read = self._reads[task] = _Read(loop.time() + self.timeout)
        if self._sweep is None:
            self._sweep = loop.call_later(self.tick, self._cut_overdue, loop)
        cancelling = task.cancelling()
        chunks: list[bytes] = []
        size = 0
        try:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return error(400, "the client disconnected before the body was complete")
                chunk: bytes = message.get("body", b"")
                size += len(chunk)
                if size > self.limit:
                    return self._too_large()
                chunks.append(chunk)
                if not message.get("more_body", False):
                    return chunks[0] if len(chunks) == 1 else b"".join(chunks)
        except asyncio.CancelledError:
            if read.cut and task.uncancel() <= cancelling:
                late = f"the body did not arrive within {self.timeout:g}s"
                return error(408, late, close=True)
            raise
        finally:
            del self._reads[task]

    def _too_large(self) -> JSONResponse:
        return error(413, f"body larger than {self.limit} bytes", close=True)

    def _cut_overdue(self, loop: asyncio.AbstractEventLoop) -> None:
        now = loop.time()
        for task, read in self._reads.items():
            if not read.cut and read.deadline <= now:
                read.cut = True
                task.cancel()  # raised where the task waits, which is inside `read`
        self._sweep = loop.call_later(self.tick, self._cut_overdue, loop) if self._reads else None


def header(scope: Scope, name: bytes) -> str | None:
    """A request header's value (the first, if sent twice); `name` in lower case, as ASGI
    servers give header names."""
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value).decode("latin-1")
    return None


def error(status: int, message: str, *, retry: bool = False, close: bool = False) -> JSONResponse:
    """A JSON error. `retry`: with `Retry-After` (a 503 the sender should try again). `close`:
    the body was not read to its end, so the connection cannot carry another request; closing
    it also stops a client that keeps trickling bytes."""
    headers = {"Retry-After": RETRY_AFTER} if retry else {}
    if close:
        headers["Connection"] = "close"
    return JSONResponse({"error": message}, status_code=status, headers=headers)
