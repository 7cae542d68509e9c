"""The Smstools REST API (us → Smstools): credentials, balance, replies (`/message/send`).

Every call carries `X-Client-Id` / `X-Client-Secret`. Failures are classified like the chat
adapters' (`Retryable` / `Permanent` with a `Reason`), and keep the gateway's own error code
(`{"error": "104", "errorMsg": "Invalid credentials"}`) so callers can act on it: 137 means
"send a WhatsApp template instead", 131 "the customer opted out", and so on.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import httpx
from pydantic import SecretStr

from bridge.errors import DeliveryError, Permanent, Reason, Retryable
from bridge.language import N_, Phrase
from bridge.settings import DEFAULT_SMSTOOLS_API_URL, Settings


@dataclass(frozen=True)
class ErrorCode:
    """One of the gateway's error codes: what it means (for the logs), what an agent whose
    reply it refused reads (None: the error's detail) and the agent's next step (gettext
    msgids: see `bridge/language.py`), and, for a refusal of the account itself rather than
    of one message, its `Reason`."""

    meaning: str
    for_agent: str | None
    next_step: str
    account: Reason | None = None


FIXED_BY_ON_CALL = N_("send it again once on-call has fixed it")

# The gateway's error codes (`error` in a 4xx body, a string).
ERROR_CODES: dict[str, ErrorCode] = {
    "104": ErrorCode(
        "invalid credentials",
        N_("Smstools refused the bridge's API credentials; on-call has been told"),
        FIXED_BY_ON_CALL,
        Reason.AUTH,
    ),
    "116": ErrorCode(
        "the account is inactive",
        N_("the Smstools account is inactive; on-call has been told"),
        FIXED_BY_ON_CALL,
        Reason.AUTH,
    ),
    "118": ErrorCode(
        "the message is too long (459 characters at most)",
        N_("the answer is too long for the gateway (459 characters at most)"),
        N_("shorten it and send it again"),
    ),
    "121": ErrorCode("invalid date", None, N_("look the answer up in the Smstools dashboard")),
    "131": ErrorCode(
        "the number is on the opt-out list",
        N_("the customer's number is on the opt-out list"),
        N_("reach the customer another way if it matters"),
    ),
    "137": ErrorCode(
        "the WhatsApp 24-hour window is not open (send a template instead)",
        N_("the customer last wrote on WhatsApp over 24 hours ago, so free text may not be sent"),
        N_(
            "answer by SMS instead, or send a WhatsApp template (templates are made in the "
            "Smstools dashboard, under WhatsApp)"
        ),
    ),
    "139": ErrorCode(
        "missing or invalid parameters",
        N_("the gateway refused the request as invalid (missing or invalid parameters)"),
        N_("tell on-call, with the time of the answer"),
    ),
    "200": ErrorCode(
        "this IP address is not allowed",
        N_("Smstools does not accept the bridge's IP address; on-call has been told"),
        FIXED_BY_ON_CALL,
        Reason.FORBIDDEN,
    ),
}
# Codes that refuse the bridge's account (credentials, IP), whatever the message.
ACCOUNT_CODES = frozenset(code for code, known in ERROR_CODES.items() if known.account)


def refusal(code: str | None, detail: str) -> tuple[Phrase, Phrase]:
    """What a refusal means for the agent whose reply it was, and their next step: by the
    gateway's `code`, else its `detail` as it gave it (not translated)."""
    known = ERROR_CODES.get(code or "")
    if known is None:
        return Phrase(detail), Phrase(N_("look the answer up in the Smstools dashboard"))
    return Phrase(known.for_agent or detail), Phrase(known.next_step)


class SmstoolsPermanent(Permanent):
    """The gateway refused for good; `code` is its error code ("104") when it gave one."""

    def __init__(self, reason: Reason, detail: str, code: str | None = None) -> None:
        super().__init__(reason, detail)
        self.code = code


class SmstoolsRetryable(Retryable):
    """Try again later (429, 5xx, timeout, connection); `code` as for `SmstoolsPermanent`."""

    def __init__(
        self,
        reason: Reason,
        detail: str,
        retry_after: float | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(reason, detail, retry_after)
        self.code = code


class SendOutcomeUnknown(Permanent):
    """The send request may have reached the gateway (a timeout after it was written, a
    connection lost mid-answer, a 500, 502 or 504): it may have been sent, so it must never be
    sent again."""


@dataclass(frozen=True)
class Balance:
    """The account's credit as the gateway states it (`amount` kept as text: no rounding)."""

    amount: str
    currency: str | None = None

    def __str__(self) -> str:
        return f"{self.amount} {self.currency}" if self.currency else self.amount


class SmstoolsApi:
    """An async client for one Smstools account. Use `async with` or call `close()`."""

    def __init__(
        self,
        client_id: str,
        client_secret: SecretStr,
        *,
        base_url: str = DEFAULT_SMSTOOLS_API_URL,
        timeout: float = 10.0,
    ) -> None:
        self._where = "Smstools API"
        self._client = httpx.AsyncClient(
            base_url=base_url.rstrip("/"),
            timeout=timeout,
            # A retry belongs to the durable outbox; never follow a redirect with credentials.
            follow_redirects=False,
            headers={
                "X-Client-Id": client_id,
                "X-Client-Secret": client_secret.get_secret_value(),
                "Accept": "application/json",
            },
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> SmstoolsApi | None:
        """The configured client, or None when SMSTOOLS_CLIENT_ID/_SECRET are not both set."""
        if settings.smstools_client_id is None or settings.smstools_client_secret is None:
            return None
        return cls(
            settings.smstools_client_id,
            settings.smstools_client_secret,
            base_url=settings.smstools_api_url,
        )

    async def close(self) -> None:
        await self._client.aclose()

    async def __aenter__(self) -> SmstoolsApi:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def balance(self) -> Balance:
        """`GET /balance`: the account's credit; also proves the credentials are accepted."""
        body = await self._request("GET", "/balance")
        return _balance(body)

    async def send(self, *, to: str, sender: str, message: str, reference: str) -> str | None:
        """`POST /message/send` to one number, at most once; the gateway's `messageid`, or
        None when a 2xx (accepted) came without the documented `messageid`.

        `SmstoolsRetryable` only when the request certainly did not reach the gateway
        (refused connection, DNS failure, connect timeout) or the answer says it was not
        processed (503, 429). Any other failure after the request was written (500, 502, 504,
        a read timeout, a connection lost mid-answer) raises `SendOutcomeUnknown`.
        """
        body = {"to": to, "sender": sender, "message": message, "reference": reference}
        try:
            response = await self._client.post("/message/send", json=body)
        except _NEVER_SENT as error:
            raise _cannot_connect(error) from None
        except httpx.HTTPError as error:
            reason = (
                Reason.TIMEOUT if isinstance(error, httpx.TimeoutException) else Reason.CONNECTION
            )
            detail = f"{self._where}: no answer to the send request ({type(error).__name__})"
            raise SendOutcomeUnknown(reason, detail) from None
        answer = _json_object(response)
        if response.is_success:
            return _messageid(answer)
        status = response.status_code
        if status >= 500 and status not in _NOT_PROCESSED:
            detail = f"{self._where} answered HTTP {status} after the send request was made"
            raise SendOutcomeUnknown(Reason.SERVER, detail)
        raise classify(status, answer, response.headers.get("retry-after"))

    async def _request(self, method: str, path: str) -> dict[str, Any]:
        """One call that is safe to repeat: every failure but a refusal is retryable."""
        try:
            response = await self._client.request(method, path)
        except _NEVER_SENT as error:
            raise _cannot_connect(error) from None
        except httpx.TimeoutException:
            raise SmstoolsRetryable(Reason.TIMEOUT, f"{self._where}: timed out") from None
        except httpx.HTTPError as error:
            detail = f"{self._where}: network error ({type(error).__name__})"
            raise SmstoolsRetryable(Reason.CONNECTION, detail) from None
        body = _json_object(response)
        if response.is_success and body is not None:
            return body
        raise classify(response.status_code, body, response.headers.get("retry-after"))


# Failures before a connection existed: nothing reached the gateway.
_NEVER_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
# Answers that say the request was not processed: a send may be made again.
_NOT_PROCESSED = {429, 503}


def _cannot_connect(error: httpx.HTTPError) -> SmstoolsRetryable:
    return SmstoolsRetryable(
        Reason.CONNECTION, f"Smstools API: cannot connect ({type(error).__name__})"
    )


def _messageid(answer: dict[str, Any] | None) -> str | None:
    """The `messageid` (or first of `messageids`) of an accepted send, if it names one."""
    if answer is None:
        return None
    messageid = answer.get("messageid")
    if messageid is None and isinstance(answer.get("messageids"), list):
        messageid = next(iter(answer["messageids"]), None)
    return str(messageid) if messageid else None


def classify(
    status: int, body: dict[str, Any] | None, retry_after: str | None = None
) -> DeliveryError:
    """A failed answer → Retryable or Permanent, with the gateway's code and what it means.

    The code decides before the HTTP status does: the gateway documents its codes, not which
    4xx carries each one.
    """
    code, message = _error_fields(body)
    known = ERROR_CODES.get(code or "")
    meaning = known.meaning if known else message or f"HTTP {status}"
    detail = f"Smstools API: {meaning}" + (f" (error {code})" if code else "")
    if status == 429:
        return SmstoolsRetryable(Reason.RATE_LIMITED, detail, _seconds(retry_after), code)
    if status >= 500:
        return SmstoolsRetryable(Reason.SERVER, f"Smstools API answered HTTP {status}", None, code)
    account = known.account if known else None
    if account is Reason.AUTH or (code is None and status == 401):
        hint = " — check SMSTOOLS_CLIENT_ID and SMSTOOLS_CLIENT_SECRET"
        return SmstoolsPermanent(Reason.AUTH, detail + hint, code)
    if account is Reason.FORBIDDEN or (code is None and status == 403):
        return SmstoolsPermanent(Reason.FORBIDDEN, detail, code)
    if status == 404:
        return SmstoolsPermanent(Reason.NOT_FOUND, detail, code)
    if 200 <= status < 300:  # a 2xx that is not a JSON object: the API changed under us
        return SmstoolsPermanent(Reason.BAD_REQUEST, "Smstools API: the answer is not JSON")
    return SmstoolsPermanent(Reason.BAD_REQUEST, detail, code)


def _json_object(response: httpx.Response) -> dict[str, Any] | None:
    try:
        body = response.json()
    except (ValueError, UnicodeDecodeError):
        return None
    return body if isinstance(body, dict) else None


def _error_fields(body: dict[str, Any] | None) -> tuple[str | None, str | None]:
    """(code, message) of `{"error": "104", "errorMsg": "..."}` or `{"error": "some text"}`."""
    if body is None:
        return None, None
    error, message = body.get("error"), body.get("errorMsg")
    error = None if error is None else str(error).strip()
    message = None if message is None else str(message).strip()
    if error is not None and not error.isdigit():
        return None, message or error
    return error or None, message or None


def _seconds(retry_after: str | None) -> float | None:
    try:
        return max(float(retry_after), 0.0) if retry_after else None
    except ValueError:
        return None


def _balance(body: dict[str, Any]) -> Balance:
    # The shape of this answer is not documented. `balance` (or `amount`), a number or a
    # string, with an optional `currency` is assumed; anything else is shown whole rather
    # than guessed at, so the credentials check never fails on the shape alone.
    amount = body.get("balance", body.get("amount"))
    currency = body.get("currency")
    if isinstance(amount, int | float | str) and not isinstance(amount, bool):
        return Balance(str(amount), str(currency) if currency else None)
    return Balance(json.dumps(body, separators=(",", ":"), ensure_ascii=False))
