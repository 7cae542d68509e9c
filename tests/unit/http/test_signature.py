"""Smstools signatures checked as pure functions of body, time and secret."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.http import signature

SECRET = "whsec-test-0123456789abcdef"


NOW = 1_800_000_000


def signed_headers(body: bytes, timestamp: int = NOW, secret: str = SECRET) -> dict[str, str]:
    return {
        "X-Smstools-Timestamp": str(timestamp),
        "X-Smstools-Signature": signature.sign(secret.encode(), timestamp, body),
    }


@settings(max_examples=100, deadline=None)
@given(body=st.binary(max_size=2000), skew=st.integers(-300, 300))
def test_a_body_signed_with_the_secret_within_five_minutes_is_accepted(
    body: bytes, skew: int
) -> None:
    headers = signed_headers(body, NOW + skew)
    assert (
        signature.problem(
            SECRET.encode(),
            body,
            headers["X-Smstools-Timestamp"],
            headers["X-Smstools-Signature"],
            NOW,
        )
        is None
    )


@settings(max_examples=100, deadline=None)
@given(body=st.binary(min_size=1, max_size=2000), data=st.data())
def test_any_change_to_the_signed_body_is_refused(body: bytes, data: st.DataObject) -> None:
    index = data.draw(st.integers(0, len(body) - 1))
    flip = data.draw(st.integers(1, 255))
    tampered = body[:index] + bytes([body[index] ^ flip]) + body[index + 1 :]
    headers = signed_headers(body)
    refused = signature.problem(
        SECRET.encode(),
        tampered,
        headers["X-Smstools-Timestamp"],
        headers["X-Smstools-Signature"],
        NOW,
    )
    assert refused == "signature does not match"


def test_a_rotated_secret_may_send_several_v1_values() -> None:
    body = b"[]"
    old = signature.sign(b"old-secret", NOW, body).split(",")[1]
    header = f"{signature.sign(SECRET.encode(), NOW, body)},{old}"
    assert signature.problem(SECRET.encode(), body, str(NOW), header, NOW) is None
    assert signature.problem(b"old-secret", body, str(NOW), header, NOW) is None


def test_malformed_signature_headers_are_refused_with_a_reason() -> None:
    body = b"[]"
    good = signature.sign(SECRET.encode(), NOW, body)
    cases = {
        (None, good): "missing",
        (str(NOW), None): "missing",
        ("", good): "missing",
        ("soon", good): "not a number",
        ("1" * 40, good): "not a number",
        ("١٢٣", good): "not a number",  # Arabic-Indic digits are digits to str.isdigit
        (str(NOW + 1), good): "does not match the timestamp",
        (str(NOW), good.replace("t=", "x=")): "does not match the timestamp",
        (str(NOW), f"t={NOW}"): "signature does not match",
        (str(NOW), f"t={NOW},v1=é"): "signature does not match",
        (str(NOW), good.upper()): "does not match the timestamp",
    }
    for (timestamp, header), reason in cases.items():
        refused = signature.problem(SECRET.encode(), body, timestamp, header, NOW)
        assert refused is not None and reason in refused, (timestamp, header, refused)
