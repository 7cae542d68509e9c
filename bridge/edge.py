"""What every HTTP edge shares (Smstools webhooks, Slack events, Telegram updates): a body
read within a deadline and a size, and JSON errors.

A client has `timeout` seconds to send its whole body once its headers are in; a refusal sent
before the body was read to its end closes the connection, so a client trickling bytes holds
nothing for long.
"""

from __future__ import annotations

import asyncio

from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse

RETRY_AFTER = "5"  # seconds, on a 503: the database could not take the request now
MAX_BODY = 1024 * 1024  # bytes: more is 413, before the rest is read


async def read_body(request: Request, *, limit: int, timeout: float) -> bytes | JSONResponse:
    """The whole body, or the error to answer: 413 past `limit` bytes (declared or sent),
    408 when it did not arrive within `timeout`, 400 when the client went away."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        return error(413, f"body larger than {limit} bytes", close=True)
    chunks, size = [], 0
    try:
        async with asyncio.timeout(timeout):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    return error(413, f"body larger than {limit} bytes", close=True)
                chunks.append(chunk)
    except ClientDisconnect:
        return error(400, "the client disconnected before the body was complete")
    except TimeoutError:
        return error(408, f"the body did not arrive within {timeout:g}s", close=True)
    return b"".join(chunks)


def error(status: int, message: str, *, retry: bool = False, close: bool = False) -> JSONResponse:
    """A JSON error. `retry`: with `Retry-After` (a 503 the sender should try again). `close`:
    the body was not read to its end, so the connection cannot carry another request; closing
    it also stops a client that keeps trickling bytes."""
    headers = {"Retry-After": RETRY_AFTER} if retry else {}
    if close:
        headers["Connection"] = "close"
    return JSONResponse({"error": message}, status_code=status, headers=headers)
