"""The HTTP edge for Smstools: receive → verify → parse, then hand over to `ingest`.

Answers 200 only once the body and its events are committed. Errors are JSON that says
what is wrong, without echoing the body back. A body must arrive within `body_timeout`, and a
refusal sent before the body was read closes the connection: a client trickling bytes holds
nothing for long.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import SecretStr
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse

from bridge import signature
from bridge.config import Config
from bridge.ingest import ingest
from bridge.settings import DEFAULT_BODY_TIMEOUT
from bridge.store.db import UNAVAILABLE, Database, describe_error

log = logging.getLogger(__name__)

MAX_BODY = 1024 * 1024


@dataclass
class WebhookReceiver:
    database: Database
    config: Config
    token: str
    now: Callable[[], float]
    on_stored: Callable[[], None]
    secret: SecretStr | None = None  # SMSTOOLS_WEBHOOK_SECRET: signatures required when set
    body_timeout: float = DEFAULT_BODY_TIMEOUT

    async def __call__(self, request: Request) -> JSONResponse:
        offered = str(request.path_params.get("token", "")).encode()
        if not hmac.compare_digest(offered, self.token.encode()):
            return _error(404, "not found", close=True)
        body = await _read_body(request, self.body_timeout)
        if isinstance(body, JSONResponse):
            return body
        if self.secret is not None:
            refused = signature.problem(
                self.secret.get_secret_value().encode(),
                body,
                request.headers.get(signature.TIMESTAMP_HEADER),
                request.headers.get(signature.SIGNATURE_HEADER),
                self.now(),
            )
            if refused is not None:
                log.warning("webhook refused (401): %s", refused)
                return _error(401, "signature check failed")
        items = _parse(body)
        if isinstance(items, JSONResponse):
            return items
        try:
            result = await ingest(self.database, self.config, body, items, self.now())
        except UNAVAILABLE as error:
            # Down, locked or too slow: the gateway sends it again. Not log.exception: the
            # statement's parameters would put message content in logs.
            log.error("could not store a webhook body: %s", describe_error(error))
            return _error(503, "the webhook could not be stored; send it again", retry=True)
        self.on_stored()
        return JSONResponse(result.as_json())


async def _read_body(request: Request, timeout: float) -> bytes | JSONResponse:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY:
        return _error(413, f"body larger than {MAX_BODY} bytes", close=True)
    chunks, size = [], 0
    try:
        async with asyncio.timeout(timeout):
            async for chunk in request.stream():
                size += len(chunk)
                if size > MAX_BODY:
                    return _error(413, f"body larger than {MAX_BODY} bytes", close=True)
                chunks.append(chunk)
    except ClientDisconnect:
        return _error(400, "the client disconnected before the body was complete")
    except TimeoutError:
        return _error(408, f"the body did not arrive within {timeout:g}s", close=True)
    return b"".join(chunks)


def _parse(body: bytes) -> list[Any] | JSONResponse:
    """The body is JSON whatever the Content-Type says: an array of events or one event."""
    if not body.strip():
        return _error(400, "empty body: expected a JSON array of events")
    try:
        document = _storable(json.loads(body, parse_int=_integer))
    except UnicodeDecodeError:
        return _error(400, "body is not valid UTF-8 JSON")
    except RecursionError:
        return _error(400, "body is JSON nested too deeply")
    except ValueError as error:
        return _error(400, f"body is not valid JSON: {error}")
    if isinstance(document, dict):
        return [document]
    if isinstance(document, list):
        return document
    return _error(400, "body must be a JSON array of events (or a single event object)")


def _integer(digits: str) -> int | float:
    # Python refuses to read ints of more than 4300 digits; valid JSON all the same, and no
    # field we use is one. Keep the event (the raw body keeps the exact digits).
    return int(digits) if len(digits) <= 4000 else float(digits)


_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def _storable(value: Any) -> Any:
    """Every string made storable text: NUL (refused by PostgreSQL TEXT) and lone surrogates
    (JSON allows `\\ud800`, UTF-8 does not) become U+FFFD. The raw body keeps the original."""
    if isinstance(value, str):
        return _UNSTORABLE.sub("\ufffd", value)
    if isinstance(value, list):
        return [_storable(item) for item in value]
    if isinstance(value, dict):
        return {_storable(key): _storable(item) for key, item in value.items()}
    return value


def _error(status: int, message: str, *, retry: bool = False, close: bool = False) -> JSONResponse:
    """A JSON error. `close`: the body was not read to its end, so the connection cannot carry
    another request; closing it also stops a client that keeps trickling bytes."""
    headers = {"Retry-After": "5"} if retry else {}
    if close:
        headers["Connection"] = "close"
    return JSONResponse({"error": message}, status_code=status, headers=headers)
