"""The privacy filter: numbers masked, secrets hidden, in text and JSON."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import pytest

from bridge import logs

SECRET = "whsec-privacy-test-secret-42"


CUSTOMER = "32470123456"


@pytest.fixture(params=["text", "json"])
def log_format(request: pytest.FixtureRequest) -> str:
    form: str = request.param
    return form


def test_redact_masks_numbers_in_every_common_format_and_hides_token_shapes() -> None:
    text = (
        f"{CUSTOMER} +32 470 12 34 56 0032470123456 0470 12 34 56 "
        "https://api.telegram.org/bot123456:ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789/sendMessage "
        "xoxb-1-2-abc postgresql://bridge:hunter22@db/bridge"
    )
    redacted = logs.redact(text)
    assert redacted.count("+32 470 •• •• 56") == 4
    assert "ABCDEFGHIJ" not in redacted and "xoxb-1" not in redacted
    assert "hunter22" not in redacted and "bridge:•••@db" in redacted
    # What is not a phone number is left alone: job ids, Telegram chats, Slack ts, dates.
    kept = "job 12 chat -1001234567890 ts 1800000000.000100 at 2026-11-26 10:00:00"
    assert logs.redact(kept) == kept


def test_extra_fields_pass_the_privacy_filter_too(log_format: str) -> None:
    captured = io.StringIO()
    handler = logging.StreamHandler(captured)
    handler.setFormatter(logs.formatter(log_format))
    handler.addFilter(logs.PrivacyFilter([SECRET]))
    logger = logging.getLogger("tests.privacy.extra")
    logger.addHandler(handler)
    try:
        logger.error(
            "with fields",
            extra={"sender": f"+{CUSTOMER}", "token": SECRET, "job_id": 7, "at": Path("x")},
        )
    finally:
        logger.removeHandler(handler)
    shown = captured.getvalue()
    assert CUSTOMER not in shown and SECRET not in shown
    if log_format == "json":
        record = json.loads(shown)
        assert record["sender"] == "+32 470 •• •• 56"
        assert record["token"] == logs.HIDDEN
        assert record["job_id"] == 7 and record["level"] == "ERROR"


@pytest.mark.parametrize(
    "written",
    [
        "tel:+32470123456",
        "wa:32470123456",
        "whatsapp:+32470123456",
        "+32-470-12-34-56",
        "+32.470.12.34.56",
        "(+32) 470 123 456",
        "+32 470-12-34-56",
    ],
)
def test_numbers_are_masked_however_they_are_written(written: str) -> None:
    redacted = logs.redact(f"sent to {written}.")
    assert "+32 470 •• •• 56" in redacted and "123456" not in redacted.replace(" ", "")
    assert redacted.endswith(".")


@pytest.mark.parametrize(
    "line",
    [
        "update_id=123456789",
        "{'update_id': 447700900450, 'message': {'message_id': 32470123456}}",
        '{"update_id": 32470123456}',
        "skipping update 123456789 from chat 8123456789",
        "user 447700900450 (id 32470123456)",
    ],
)
def test_ids_are_not_masked_as_numbers(line: str) -> None:
    assert logs.redact(line) == line


def test_a_whatsapp_id_is_the_customer_s_number_and_is_masked() -> None:
    assert logs.redact('"wa_id": "32470123456"') == '"wa_id": "+32 470 •• •• 56"'
