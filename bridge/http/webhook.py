"""The HTTP edge for Smstools: receive → verify → parse, then store the raw body through the
group commit (`group_commit`); the worker's intake plans its events later (`planning`).

Answers 200 only once the body is committed; 503 with `Retry-After` when the database could
not take it (one log line per group). Errors are JSON that says
what is wrong, without echoing the body back. A body must arrive within `BRIDGE_BODY_TIMEOUT`
(`edge.BodyReader`), and a refusal sent before the body was read closes the connection.
"""

from __future__ import annotations

import functools
import hmac
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import SecretStr
from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send

from bridge import json_text, logs
from bridge.http import edge, signature
from bridge.intake.group_commit import GroupCommit, NotStored
from bridge.intake.ingest import Body, items_of
from bridge.metrics import Metrics
from bridge.settings import Settings
from bridge.store import facts as facts_store
from bridge.store.db import Database, describe_error

log = logging.getLogger(__name__)

# Events in one body, at most: more is refused (413) before anything is stored, so one client
# cannot hold the writer for long (Smstools sends far fewer per webhook).
MAX_EVENTS = 10_000


async def webhook_token(database: Database, settings: Settings) -> tuple[str, bool]:
    """The secret URL token: from the environment, else generated once and kept in the DB.
    True when this call generated it. Either way the log filter hides it from now on."""
    if settings.webhook_token is not None:
        token, created = settings.webhook_token.get_secret_value(), False
    else:
        async with database.transaction() as connection:
            created = await facts_store.add(
                database, connection, "webhook_token", secrets.token_urlsafe(32)
            )
            token = await facts_store.get(connection, "webhook_token") or ""
    logs.hide(token)
    return token, created


@dataclass(frozen=True)
class WebhookAuth:
    """What a webhook must show: the secret token in its URL and, when
    SMSTOOLS_WEBHOOK_SECRET is set, a signature of its body."""

    token: str
    secret: SecretStr | None = None
    _token: bytes = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_token", self.token.encode())

    def knows(self, scope: Scope) -> bool:
        """Whether the request's URL holds the token."""
        offered = str(scope.get("path_params", {}).get("token", "")).encode()
        return hmac.compare_digest(offered, self._token)

    def refused(self, scope: Scope, body: bytes, now: Callable[[], float]) -> str | None:
        """Why the body's signature is refused; None when it holds or none is required."""
        if self.secret is None:
            return None
        return signature.problem(
            self.secret.get_secret_value().encode(),
            body,
            edge.header(scope, signature.TIMESTAMP_HEADER.encode()),
            edge.header(scope, signature.SIGNATURE_HEADER.encode()),
            now(),
        )


def group_commit(database: Database, sender: str = "") -> GroupCommit:
    """The group commit a `WebhookReceiver` stores with; a failure is one log line a group.
    `sender`: the worker this process wakes itself (`GroupCommit`)."""
    return GroupCommit(database, _unavailable, sender=sender)


@dataclass
class WebhookReceiver:
    """Answers Smstools webhooks: checks `auth`, stores each body through `commits`, then
    calls `on_stored` (the worker's wake-up: its intake plans the body)."""

    commits: GroupCommit
    auth: WebhookAuth
    now: Callable[[], float]
    on_stored: Callable[[], None]
    bodies: edge.BodyReader = field(default_factory=edge.BodyReader)
    metrics: Metrics | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """An ASGI endpoint (the route's own app): the bridge's hot path skips building a
        Starlette `Request` it would read two headers and the body from."""
        started = time.perf_counter()
        response = await self._receive(scope, receive)
        if self.metrics is not None:
            self.metrics.webhook_answered(response.status_code, time.perf_counter() - started)
        await response(scope, receive, send)

    async def _receive(self, scope: Scope, receive: Receive) -> Response:
        if not self.auth.knows(scope):
            return edge.error(404, "not found", close=True)
        body = await self.bodies.read(receive, edge.header(scope, b"content-length"))
        if isinstance(body, JSONResponse):
            return body
        refused = self.auth.refused(scope, body, self.now)
        if refused is not None:
            log.warning("webhook refused (401): %s", refused, extra={"outcome": "rejected"})
            return edge.error(401, "signature check failed")
        items = _parse(body)
        if isinstance(items, JSONResponse):
            return items
        if len(items) > MAX_EVENTS:
            return edge.error(
                413,
                f"{len(items)} events in one body; at most {MAX_EVENTS} are accepted: "
                "send them in smaller bodies",
            )
        try:
            await self.commits.submit(Body(body, items, self.now()))
        except NotStored:  # down, locked or too slow (logged once per group): sent again
            return edge.error(503, "the webhook could not be stored; send it again", retry=True)
        self.on_stored()
        return _stored(len(items))


@functools.lru_cache(maxsize=1024)
def _stored(events: int) -> Response:
    """The 200 for a stored body of `events` events, built once for each count: building the
    JSON and the headers is a large share of what answering costs (a `Response` holds nothing
    of the request it answers: one serves many). Whether each event is understood, new or a
    resend is for the intake to find, after the answer."""
    return JSONResponse({"received": events})


def _unavailable(error: Exception, bodies: int) -> None:
    # Not log.exception: the statement's parameters would put message content in logs.
    what = "a webhook body" if bodies == 1 else f"a group of {bodies} webhook bodies"
    log.error("could not store %s: %s", what, describe_error(error))


def _parse(body: bytes) -> list[Any] | JSONResponse:
    """The body is JSON whatever the Content-Type says: an array of events or one event."""
    if not body.strip():
        return edge.error(400, "empty body: expected a JSON array of events")
    try:
        document = json_text.read(body)
    except UnicodeDecodeError:
        return edge.error(400, "body is not valid UTF-8 JSON")
    except RecursionError:
        return edge.error(400, "body is JSON nested too deeply")
    except ValueError as error:
        return edge.error(400, f"body is not valid JSON: {error}")
    items = items_of(document)
    if items is None:
        return edge.error(400, "body must be a JSON array of events (or a single event object)")
    return items
