"""SMS parts: GSM-7 (with the two-septet extension table) versus UCS-2."""

from __future__ import annotations

import pytest

from bridge.smstools.sms_parts import encoding, parts


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", 0),
        ("a" * 160, 1),
        ("a" * 161, 2),
        ("a" * 306, 2),
        ("a" * 459, 3),
        ("a" * 460, 4),
        ("€" * 80, 1),  # two septets each: 160
        ("€" * 81, 2),
        ("é" * 70, 1),  # é is in the GSM-7 alphabet
        ("é" * 70 + "ç", 2),  # lower-case ç is not: UCS-2, 71 code units, over one part's 70
    ],
)
def test_parts_count_septets_or_code_units(text: str, expected: int) -> None:
    assert parts(text) == expected


def test_an_emoji_makes_the_text_ucs2_and_counts_twice() -> None:
    assert encoding("hello 🙂") == "UCS-2" and encoding("hello") == "GSM-7"
    assert parts("🙂" * 35) == 1 and parts("🙂" * 36) == 2
