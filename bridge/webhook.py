"""The HTTP edge for Smstools: receive → verify → parse, then hand over to `ingest`.

Answers 200 only once the body and its events are committed. Errors are JSON that says
what is wrong, without echoing the body back.
"""

from __future__ import annotations

import hmac
import json
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import SecretStr
from sqlalchemy.exc import SQLAlchemyError
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse

from bridge import signature
from bridge.config import Config
from bridge.ingest import IngestResult, ingest
from bridge.metrics import Metrics, delivery_code, webhook_type
from bridge.store.db import Database, describe_error

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
    metrics: Metrics | None = None

    async def __call__(self, request: Request) -> JSONResponse:
        started = time.perf_counter()
        response = await self._receive(request)
        if self.metrics is not None:
            status = response.status_code
            outcome = "stored" if status == 200 else "rejected"
            self.metrics.webhook_requests.labels(outcome, str(status)).inc()
            self.metrics.webhook_seconds.observe(time.perf_counter() - started)
        return response

    async def _receive(self, request: Request) -> JSONResponse:
        offered = str(request.path_params.get("token", "")).encode()
        if not hmac.compare_digest(offered, self.token.encode()):
            return _error(404, "not found")
        body = await _read_body(request)
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
                log.warning("webhook refused (401): %s", refused, extra={"outcome": "rejected"})
                return _error(401, "signature check failed")
        items = _parse(body)
        if isinstance(items, JSONResponse):
            return items
        try:
            result = await ingest(self.database, self.config, body, items, self.now())
        except SQLAlchemyError as error:
            # Not log.exception: the statement's parameters would put message content in logs.
            log.error("could not store a webhook body: %s", describe_error(error))
            return _error(503, "the webhook could not be stored; send it again", retry=True)
        self.on_stored()
        self._count(result)
        return JSONResponse(result.as_json())

    def _count(self, result: IngestResult) -> None:
        for kind, outcome in result.outcomes:
            log.debug("webhook event %s", outcome, extra={"webhook_type": kind, "outcome": outcome})
            if self.metrics is not None:
                self.metrics.webhook_events.labels(webhook_type(kind), outcome).inc()
        if self.metrics is not None:
            for code in result.report_codes:
                self.metrics.delivery_reports.labels(delivery_code(code)).inc()


async def _read_body(request: Request) -> bytes | JSONResponse:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY:
        return _error(413, f"body larger than {MAX_BODY} bytes")
    chunks, size = [], 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > MAX_BODY:
                return _error(413, f"body larger than {MAX_BODY} bytes")
            chunks.append(chunk)
    except ClientDisconnect:
        return _error(400, "the client disconnected before the body was complete")
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


def _error(status: int, message: str, *, retry: bool = False) -> JSONResponse:
    headers = {"Retry-After": "5"} if retry else None
    return JSONResponse({"error": message}, status_code=status, headers=headers)
