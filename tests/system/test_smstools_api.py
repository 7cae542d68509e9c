"""The Smstools API client against the fake Smstools API: credentials, balance, errors."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from bridge.errors import Reason
from bridge.smstools.api import (
    Balance,
    SmstoolsApi,
    SmstoolsPermanent,
    SmstoolsRetryable,
)
from testkit.fakes.smstools import FakeSmstools

SECRET = "secret-test"


@pytest.fixture
async def api(smstools: FakeSmstools) -> AsyncIterator[SmstoolsApi]:
    async with SmstoolsApi("client-test", SecretStr(SECRET), base_url=smstools.api_url) as api:
        yield api


async def test_balance_is_read_with_the_client_id_and_secret_headers(
    api: SmstoolsApi, smstools: FakeSmstools
) -> None:
    assert await api.balance() == Balance("123.45", "EUR")
    assert str(await api.balance()) == "123.45 EUR"
    (call, _) = smstools.calls("/balance")
    assert (call.method, call.client_id, call.status) == ("GET", "client-test", 200)


async def test_a_balance_without_currency_shows_the_amount_alone(
    api: SmstoolsApi, smstools: FakeSmstools
) -> None:
    smstools.set_balance("7.50", None)
    assert str(await api.balance()) == "7.50"


@pytest.mark.parametrize("how", ["wrong secret", "switch"])
async def test_rejected_credentials_are_permanent_auth_errors_with_code_104(
    how: str, smstools: FakeSmstools
) -> None:
    secret = "not-the-secret" if how == "wrong secret" else SECRET
    smstools.set_bad_credentials(how == "switch")
    async with SmstoolsApi("client-test", SecretStr(secret), base_url=smstools.api_url) as api:
        with pytest.raises(SmstoolsPermanent) as raised:
            await api.balance()
    assert raised.value.reason is Reason.AUTH and raised.value.code == "104"
    assert "invalid credentials" in raised.value.detail
    assert "SMSTOOLS_CLIENT_SECRET" in raised.value.detail  # says how to fix it
    assert secret not in str(raised.value)


@pytest.mark.parametrize(
    ("code", "reason"),
    [
        ("116", Reason.AUTH),
        ("200", Reason.FORBIDDEN),
        ("139", Reason.BAD_REQUEST),
        ("137", Reason.BAD_REQUEST),
        ("999", Reason.BAD_REQUEST),
    ],
)
async def test_the_gateways_error_code_is_kept_on_the_permanent_error(
    code: str, reason: Reason, api: SmstoolsApi, smstools: FakeSmstools
) -> None:
    smstools.set_error(code)
    with pytest.raises(SmstoolsPermanent) as raised:
        await api.balance()
    assert raised.value.reason is reason and raised.value.code == code
    assert f"(error {code})" in raised.value.detail


async def test_a_server_error_is_retryable(api: SmstoolsApi, smstools: FakeSmstools) -> None:
    smstools.set_down(times=1, status=502)
    with pytest.raises(SmstoolsRetryable) as raised:
        await api.balance()
    assert raised.value.reason is Reason.SERVER and "502" in raised.value.detail
    assert str(await api.balance()) == "123.45 EUR"  # the next call goes through


async def test_429_is_retryable_after_the_gateways_retry_after(
    api: SmstoolsApi, smstools: FakeSmstools
) -> None:
    smstools.set_rate_limited(retry_after=7, times=1)
    with pytest.raises(SmstoolsRetryable) as raised:
        await api.balance()
    assert raised.value.reason is Reason.RATE_LIMITED and raised.value.retry_after == 7.0


async def test_a_stuck_api_times_out_as_retryable(smstools: FakeSmstools) -> None:
    smstools.set_slow(5)
    client = SmstoolsApi("client-test", SecretStr(SECRET), base_url=smstools.api_url, timeout=0.3)
    async with client as api:
        with pytest.raises(SmstoolsRetryable) as raised:
            await api.balance()
    assert raised.value.reason is Reason.TIMEOUT


async def test_a_refused_connection_is_retryable() -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    async with SmstoolsApi("id", SecretStr(SECRET), base_url=f"http://127.0.0.1:{port}/v1") as api:
        with pytest.raises(SmstoolsRetryable) as raised:
            await api.balance()
    assert raised.value.reason is Reason.CONNECTION


# -- the fake's /message/send, as issue 8's replies will use it ----------------------------

HEADERS = {"X-Client-Id": "client-test", "X-Client-Secret": SECRET}


def send(smstools: FakeSmstools, body: Any, headers: dict[str, str] = HEADERS) -> httpx.Response:
    return httpx.post(f"{smstools.api_url}/message/send", json=body, headers=headers)


def test_the_fake_sends_one_message_and_answers_its_messageid(smstools: FakeSmstools) -> None:
    answer = send(smstools, {"message": "Hi", "to": "32470123456", "sender": "32460200000"})
    assert answer.status_code == 200
    (sent,) = smstools.sent()
    assert answer.json() == {"messageid": sent.messageids[0]}
    assert (sent.to, sent.sender, sent.message, sent.test) == (
        ["32470123456"],
        "32460200000",
        "Hi",
        False,
    )


def test_the_fake_answers_messageids_for_several_recipients(smstools: FakeSmstools) -> None:
    body = {"message": "Hi", "to": ["32470123456", "+32470654321"], "sender": "Shop"}
    answer = send(smstools, body)
    assert answer.status_code == 200 and len(answer.json()["messageids"]) == 2
    assert smstools.sent()[0].to == ["32470123456", "32470654321"]


GOOD = {"message": "Hi", "to": "32470123456", "sender": "Shop"}


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ({**GOOD, "message": ""}, "139"),
        ({"message": "Hi", "to": "32470123456"}, "139"),
        ({**GOOD, "to": "not a number"}, "139"),
        ({**GOOD, "sender": "a name far too long"}, "139"),
        ({**GOOD, "reference": "r" * 256}, "139"),
        ({**GOOD, "message": "x" * 460}, "118"),
        ({**GOOD, "date": "tomorrow"}, "121"),
        (["not", "an", "object"], "error parsing json"),
    ],
)
def test_the_fake_refuses_what_the_real_api_refuses(
    body: Any, error: str, smstools: FakeSmstools
) -> None:
    answer = send(smstools, body)
    assert answer.status_code == 400 and answer.json()["error"] == error
    assert smstools.sent() == []


def test_the_fake_checks_credentials_and_the_opt_out_list(smstools: FakeSmstools) -> None:
    assert send(smstools, GOOD, headers={}).json()["error"] == "104"
    smstools.set_opted_out("+32470123456")
    refused = send(smstools, GOOD).json()
    assert refused == {"error": "131", "errorMsg": "Number is on the opt-out list"}
    assert smstools.sent() == []
