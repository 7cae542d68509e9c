"""The HTTP edge for Smstools: receive → verify → parse, then hand over to `ingest`.

Answers 200 only once the body and its events are committed. Errors are JSON that says
what is wrong, without echoing the body back. A body must arrive within `body_timeout`
(`edge.read_body`), and a refusal sent before the body was read closes the connection.
"""

from __future__ import annotations

import hmac
import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import SecretStr
from starlette.requests import Request
from starlette.responses import JSONResponse

from bridge import edge, signature
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
            return edge.error(404, "not found", close=True)
        body = await edge.read_body(request, limit=MAX_BODY, timeout=self.body_timeout)
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
                return edge.error(401, "signature check failed")
        items = _parse(body)
        if isinstance(items, JSONResponse):
            return items
        try:
            result = await ingest(self.database, self.config, body, items, self.now())
        except UNAVAILABLE as error:
            # Down, locked or too slow: the gateway sends it again. Not log.exception: the
            # statement's parameters would put message content in logs.
            log.error("could not store a webhook body: %s", describe_error(error))
            return edge.error(503, "the webhook could not be stored; send it again", retry=True)
        self.on_stored()
        return JSONResponse(result.as_json())


def _parse(body: bytes) -> list[Any] | JSONResponse:
    """The body is JSON whatever the Content-Type says: an array of events or one event."""
    if not body.strip():
        return edge.error(400, "empty body: expected a JSON array of events")
    try:
        document = _storable(json.loads(body, parse_int=_integer))
    except UnicodeDecodeError:
        return edge.error(400, "body is not valid UTF-8 JSON")
    except RecursionError:
        return edge.error(400, "body is JSON nested too deeply")
    except ValueError as error:
        return edge.error(400, f"body is not valid JSON: {error}")
    if isinstance(document, dict):
        return [document]
    if isinstance(document, list):
        return document
    return edge.error(400, "body must be a JSON array of events (or a single event object)")


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
