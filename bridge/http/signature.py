"""The optional webhook signature: HMAC-SHA256 over `"<timestamp>." + raw body`.

Smstools does not document a signature; community clients show `X-Smstools-Timestamp` and
`X-Smstools-Signature: t=<ts>,v1=<hex>`. When `SMSTOOLS_WEBHOOK_SECRET` is set, a request must
carry both, the timestamps must agree and be within `TOLERANCE` of our clock (a captured
request cannot be replayed later), and one `v1` must match, compared in constant time.
"""

from __future__ import annotations

import hashlib
import hmac

TIMESTAMP_HEADER = "x-smstools-timestamp"
SIGNATURE_HEADER = "x-smstools-signature"
TOLERANCE = 300.0  # seconds either side of our clock


def sign(secret: bytes, timestamp: int, body: bytes) -> str:
    """The `X-Smstools-Signature` value for `body` sent at `timestamp` (what Smstools sends)."""
    return f"t={timestamp},v1={_digest(secret, str(timestamp), body)}"


def problem(
    secret: bytes,
    body: bytes,
    timestamp_header: str | None,
    signature_header: str | None,
    now: float,
) -> str | None:
    """Why the request's signature is not acceptable, or None when it is.

    The reason is for our logs; the client only learns that it was refused.
    """
    if not timestamp_header or not signature_header:
        return "signature or timestamp header missing"
    timestamp = timestamp_header.strip()
    if not timestamp.isascii() or not timestamp.isdigit() or len(timestamp) > 12:
        return "timestamp is not a number of seconds"
    fields: dict[str, list[str]] = {}
    for item in signature_header.split(","):
        key, _, value = item.strip().partition("=")
        fields.setdefault(key, []).append(value.strip())
    if fields.get("t") != [timestamp]:
        return "the signature's t= does not match the timestamp header"
    if abs(now - int(timestamp)) > TOLERANCE:
        return f"timestamp more than {TOLERANCE:g}s away from our clock"
    expected = _digest(secret, timestamp, body).encode()
    # Several v1 values are allowed (a secret being rotated); compare every one of them.
    matches = [hmac.compare_digest(expected, offered.encode()) for offered in fields.get("v1", [])]
    if not any(matches):
        return "signature does not match"
    return None


def _digest(secret: bytes, timestamp: str, body: bytes) -> str:
    return hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
