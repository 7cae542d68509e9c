"""A fake Smstools REST API (`https://api.smsgatewayapi.com/v1`) speaking its wire format.

    with FakeSmstools() as smstools:
        api = SmstoolsApi("client-test", SecretStr("secret-test"), base_url=smstools.api_url)
        smstools.set_error("137")            # every call: {"error": "137", "errorMsg": ...}
        ...
        assert smstools.sent()[0].to == ["32470123456"]

It checks what the real API checks: the `X-Client-Id` / `X-Client-Secret` headers (else error
104) and, for `POST /message/send`, a JSON object body with `message`, `to` and `sender`
(error 139), at most 459 characters (118), a `yyyy-MM-dd HH:mm` date (121), and numbers on the
opt-out list (131). Switches are plain attributes behind a lock, flipped from the test's thread.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .server import FakePlatform, FakeServer

MAX_MESSAGE = 459
MAX_REFERENCE = 255
_NUMBER = re.compile(r"\+?[0-9]{6,15}")
_SENDER_NUMBER = re.compile(r"\+?[0-9]{1,14}")
_SENDER_NAME = re.compile(r"[A-Za-z0-9 .\-]{1,11}")
_MESSAGES = {
    "104": "Invalid credentials",
    "116": "Account is inactive",
    "118": "Message too long",
    "121": "Invalid date",
    "131": "Number is on the opt-out list",
    "137": "WhatsApp conversation window is not open",
    "139": "Missing or invalid parameters",
    "200": "IP address not allowed",
}


@dataclass(frozen=True)
class SmstoolsCall:
    """Every request the fake answered, accepted or not (never the secret)."""

    method: str
    path: str
    client_id: str | None
    status: int
    error: str | None
    at: float


@dataclass(frozen=True)
class SmstoolsMessage:
    """An accepted `POST /message/send` (one per request, `to` always a list)."""

    messageids: list[str]
    to: list[str]
    sender: str
    message: str
    date: str | None
    reference: str | None
    test: bool
    subid: str | None
    at: float
    body: dict[str, Any] = field(repr=False, default_factory=dict)


@dataclass
class _Switches:
    bad_credentials: bool = False
    error: str | None = None  # the gateway error code every call gets
    error_status: int = 400
    error_times: int = 0  # -1 = forever
    down: int = 0  # requests left to answer 5xx; -1 = forever
    down_status: int = 503
    throttled: int = 0  # requests left to answer 429; -1 = forever
    retry_after: int = 1
    slow: float = 0.0
    # Sends to accept, then answer with `after_accept_status` and an HTML page; -1 = forever.
    after_accept: int = 0
    after_accept_status: int = 502
    opted_out: set[str] = field(default_factory=set)


class FakeSmstools(FakePlatform):
    """Fake Smstools API at `{url}/v1`: `GET /balance`, `POST /message/send`."""

    def __init__(
        self,
        client_id: str = "client-test",
        client_secret: str = "secret-test",
        *,
        balance: float | str = 123.45,
        currency: str | None = "EUR",
    ) -> None:
        self.client_id = client_id
        self.client_secret = client_secret
        self._lock = threading.Condition()
        self._closing = threading.Event()
        self._switches = _Switches()
        self._balance: float | str = balance
        self._currency = currency
        self._calls: list[SmstoolsCall] = []
        self._sent: list[SmstoolsMessage] = []
        app = Starlette(
            routes=[
                Route("/v1/balance", self._handle, methods=["GET"]),
                Route("/v1/message/send", self._handle, methods=["POST"]),
            ]
        )
        self._server = FakeServer(app)

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def api_url(self) -> str:
        """``url + "/v1"``: what SMSTOOLS_API_URL is set to."""
        return self.url + "/v1"

    # -- behaviour switches ----------------------------------------------------------------

    def set_bad_credentials(self, bad: bool = True) -> None:
        """Refuse every request with error 104, whatever the headers say."""
        with self._lock:
            self._switches.bad_credentials = bad

    def set_error(self, code: str | None, *, status: int = 400, times: int | None = None) -> None:
        """Answer `{"error": code, "errorMsg": ...}` with `status` (None restores)."""
        with self._lock:
            self._switches.error = code
            self._switches.error_status = status
            self._switches.error_times = -1 if times is None else times

    def set_down(self, *, times: int | None = None, status: int = 503) -> None:
        """Answer 5xx (an HTML error page) for the next `times` requests (None: until reset)."""
        with self._lock:
            self._switches.down = -1 if times is None else times
            self._switches.down_status = status

    def set_rate_limited(self, *, retry_after: int = 1, times: int | None = None) -> None:
        """Answer 429 + `Retry-After` for the next `times` requests (None: until reset)."""
        with self._lock:
            self._switches.throttled = -1 if times is None else times
            self._switches.retry_after = retry_after

    def set_accept_then_answer(self, status: int, *, times: int | None = 1) -> None:
        """Accept the next `times` sends (recorded in `sent()`, None: until reset), then answer
        each with `status` and an HTML page, as a proxy in front of the gateway would (a 502 or
        504) or a gateway whose answer is not the documented JSON (a 200)."""
        with self._lock:
            self._switches.after_accept = -1 if times is None else times
            self._switches.after_accept_status = status

    def set_slow(self, seconds: float) -> None:
        """Wait `seconds` before answering (0 restores)."""
        with self._lock:
            self._switches.slow = seconds

    def set_opted_out(self, *numbers: str) -> None:
        """Numbers (digits, no `+`) that `/message/send` refuses with error 131."""
        with self._lock:
            self._switches.opted_out = {number.lstrip("+") for number in numbers}

    def set_balance(self, amount: float | str, currency: str | None = "EUR") -> None:
        with self._lock:
            self._balance, self._currency = amount, currency

    def reset(self) -> None:
        """Drop every switch (recorded data is kept; see `clear`)."""
        with self._lock:
            self._switches = _Switches()

    def clear(self) -> None:
        """Forget recorded calls and messages."""
        with self._lock:
            self._calls.clear()
            self._sent.clear()

    # -- recorded data ---------------------------------------------------------------------

    def calls(self, path: str | None = None) -> list[SmstoolsCall]:
        """Every answered request in arrival order, optionally for one path ("/balance")."""
        with self._lock:
            return [c for c in self._calls if path is None or c.path == path]

    def sent(self) -> list[SmstoolsMessage]:
        """Accepted `/message/send` requests in arrival order."""
        with self._lock:
            return list(self._sent)

    # -- the API ---------------------------------------------------------------------------

    async def _handle(self, request: Request) -> Response:
        path = request.url.path.removeprefix("/v1")
        body = await request.body()
        response, slow = self._decide(request)
        if slow:
            await self._sleep(slow)
        if response is None:
            response = self._balance_answer() if path == "/balance" else self._send(body)
            if path == "/message/send" and response.status_code == 200:
                response = self._after_accept() or response
        with self._lock:
            error = None
            if isinstance(response, JSONResponse):
                error = json.loads(bytes(response.body)).get("error")
            client_id = request.headers.get("x-client-id")
            self._calls.append(
                SmstoolsCall(request.method, path, client_id, response.status_code, error, _now())
            )
            self._lock.notify_all()
        return response

    def _decide(self, request: Request) -> tuple[Response | None, float]:
        """Apply the switches and the credentials check: an error response, or None."""
        with self._lock:
            s = self._switches
            if s.down:
                s.down -= 1 if s.down > 0 else 0
                return _outage(s.down_status), s.slow
            if s.throttled:
                s.throttled -= 1 if s.throttled > 0 else 0
                return _rate_limited(s.retry_after), s.slow
            given = (request.headers.get("x-client-id"), request.headers.get("x-client-secret"))
            if s.bad_credentials or given != (self.client_id, self.client_secret):
                return _error("104", 401), s.slow
            if s.error is not None and s.error_times:
                s.error_times -= 1 if s.error_times > 0 else 0
                return _error(s.error, s.error_status), s.slow
            return None, s.slow

    def _after_accept(self) -> Response | None:
        """The answer the `set_accept_then_answer` switch puts on an accepted send, if on."""
        with self._lock:
            s = self._switches
            if not s.after_accept:
                return None
            s.after_accept -= 1 if s.after_accept > 0 else 0
            return _outage(s.after_accept_status)

    def _balance_answer(self) -> Response:
        with self._lock:
            answer: dict[str, Any] = {"balance": self._balance}
            if self._currency is not None:
                answer["currency"] = self._currency
        return JSONResponse(answer)

    def _send(self, raw: bytes) -> Response:
        try:
            body = json.loads(raw)
        except ValueError:
            return JSONResponse({"error": "error parsing json"}, status_code=400)
        if not isinstance(body, dict):
            return JSONResponse({"error": "error parsing json"}, status_code=400)
        message, to, sender = body.get("message"), body.get("to"), body.get("sender")
        numbers = [to] if isinstance(to, str) else to
        if (
            not isinstance(message, str)
            or not message
            or not isinstance(numbers, list)
            or not numbers
            or not all(isinstance(n, str) and _NUMBER.fullmatch(n) for n in numbers)
            or not isinstance(sender, str)
            or not (_SENDER_NUMBER.fullmatch(sender) or _SENDER_NAME.fullmatch(sender))
            or not isinstance(body.get("reference", ""), str)
            or len(body.get("reference") or "") > MAX_REFERENCE
            or not isinstance(body.get("test", False), bool)
        ):
            return _error("139", 400)
        if len(message) > MAX_MESSAGE:
            return _error("118", 400)
        date = body.get("date")
        if date is not None and not _valid_date(date):
            return _error("121", 400)
        digits = [number.lstrip("+") for number in numbers]
        with self._lock:
            if any(number in self._switches.opted_out for number in digits):
                return _error("131", 400)
            ids = [uuid.uuid4().hex[:30] for _ in digits]
            subid = body.get("subid")
            self._sent.append(
                SmstoolsMessage(
                    messageids=ids,
                    to=digits,
                    sender=sender,
                    message=message,
                    date=date,
                    reference=body.get("reference"),
                    test=bool(body.get("test", False)),
                    subid=None if subid is None else str(subid),
                    at=_now(),
                    body=body,
                )
            )
        if isinstance(to, str):
            return JSONResponse({"messageid": ids[0]})
        return JSONResponse({"messageids": ids})

    async def _sleep(self, seconds: float) -> None:
        deadline = _now() + seconds
        while not self._closing.is_set() and _now() < deadline:
            await asyncio.sleep(min(0.05, max(0.0, deadline - _now())))


def _valid_date(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    try:
        datetime.strptime(value, "%Y-%m-%d %H:%M")
    except ValueError:
        return False
    return True


def _now() -> float:
    return time.monotonic()


def _error(code: str, status: int) -> JSONResponse:
    return JSONResponse(
        {"error": code, "errorMsg": _MESSAGES.get(code, "Error")}, status_code=status
    )


def _rate_limited(retry_after: int) -> JSONResponse:
    return JSONResponse(
        {"error": "Too many requests"}, status_code=429, headers={"Retry-After": str(retry_after)}
    )


def _outage(status: int) -> Response:
    page = f"<html><body><h1>{status} Service Unavailable</h1></body></html>"
    return Response(page, status_code=status, media_type="text/html")
