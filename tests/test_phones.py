from __future__ import annotations

import pytest

from bridge.phones import e164_digits, international, mask


@pytest.mark.parametrize(
    "raw", ["+32 460 20 00 00", "32460200000", "0032460200000", "+32460200000"]
)
def test_any_common_format_gives_the_same_e164_digits(raw: str) -> None:
    assert e164_digits(raw) == "32460200000"


def test_a_non_number_is_refused() -> None:
    with pytest.raises(ValueError, match="not a phone number"):
        e164_digits("support")


def test_numbers_are_shown_in_international_format() -> None:
    assert international("32470123456") == "+32 470 12 34 56"
    assert international("yoursender") == "yoursender"


def test_masked_numbers_keep_only_country_first_group_and_last_two_digits() -> None:
    assert mask("32470123456") == "+32 470 •• •• 56"
    assert "123" not in mask("447911123456")


def test_a_national_number_is_read_in_the_region_given() -> None:
    assert e164_digits("0470 12 34 56", national="BE") == "32470123456"
    assert e164_digits("0032470123456", national="BE") == "32470123456"
    with pytest.raises(ValueError):
        e164_digits("0470 12 34 56")  # without a region a leading 0 is no country code
