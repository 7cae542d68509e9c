from __future__ import annotations

import pytest

from bridge import phones
from bridge.phones import international, mask


@pytest.mark.parametrize(
    "raw", ["+32 460 20 00 00", "32460200000", "0032460200000", "+32460200000"]
)
def test_any_common_format_of_a_written_number_gives_the_same_key(raw: str) -> None:
    assert phones.parse(raw) == "32460200000"


def test_a_non_number_is_refused() -> None:
    with pytest.raises(ValueError, match="not a phone number"):
        phones.parse("support")


def test_numbers_are_shown_in_international_format() -> None:
    assert international("32470123456") == "+32 470 12 34 56"
    assert international("yoursender") == "yoursender"


def test_masked_numbers_keep_only_country_first_group_and_last_two_digits() -> None:
    assert mask("32470123456") == "+32 470 •• •• 56"
    assert "123" not in mask("447911123456")


def test_a_national_number_is_read_in_the_region_given() -> None:
    assert phones.parse("0470 12 34 56", national="BE") == "32470123456"
    assert phones.parse("0032470123456", national="BE") == "32470123456"
    with pytest.raises(ValueError):
        phones.parse("0470 12 34 56")  # without a region a leading 0 is no country code


@pytest.mark.parametrize(
    "raw",
    [
        "32470123456",
        "+32 470 12 34 56",
        "0032470123456",
        "+32 (470) 12-34-56",
        "٣٢٤٧٠١٢٣٤٥٦",  # Arabic-Indic digits
        "３２４７０１２３４５６",  # full-width digits
        "+۳۲ ۴۷۰ ۱۲ ۳۴ ۵۶",  # Persian digits, grouped
    ],
)
def test_every_way_of_writing_a_number_gives_one_key(raw: str) -> None:
    assert phones.key(raw) == "32470123456"


def test_a_sender_name_is_its_own_key() -> None:
    assert phones.key(" Clinic ") == "Clinic"
    assert phones.key("yoursender") == "yoursender"


def test_a_written_number_and_the_gateways_digits_meet_on_the_same_key() -> None:
    assert phones.parse("+32 460 20 00 00") == phones.key("32460200000")
    assert phones.parse("٠٠٣٢٤٦٠٢٠٠٠٠٠") == phones.key("32460200000")
