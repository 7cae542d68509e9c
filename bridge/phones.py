"""Phone numbers: one key (E.164 digits) in, readable and masked forms out.

`key` is the only way a number becomes the form the bridge matches and stores: routes, lines,
lanes, conversations, statuses and alert labels all use it, so the same number written two
ways (`+32 470 12 34 56`, `0032470123456`, Arabic-Indic or full-width digits) is one customer.
"""

from __future__ import annotations

import re
import unicodedata

import phonenumbers

from bridge.remembered import remembered

_DIGITS = re.compile(r"\d")  # any Unicode decimal digit
_PUNCTUATION = re.compile(r"[\s+().-]")


def _ascii_digits(text: str) -> str:
    """Every decimal digit as ASCII: `٣٢٤٧٠` and `３２４７０` read as `32470`."""
    if text.isascii():
        return text
    return _DIGITS.sub(lambda match: str(unicodedata.decimal(match.group())), text)


@remembered
def key(raw: str) -> str:
    """The form a number is matched and stored in: E.164 digits without `+` (`32470123456`),
    or an alphanumeric sender name as given (`Clinic`).

    Accepts the gateway's bare digits, `+32 470 12 34 56`, `0032470123456` and digits of any
    script. Never raises: whatever is not a number is a sender name. Remembered for the
    numbers seen last: the webhook path asks for the same few several times a message.
    """
    text = _ascii_digits(raw.strip())
    digits = _PUNCTUATION.sub("", text)
    if digits.startswith("00"):
        digits = digits[2:]
    return digits if digits.isascii() and digits.isdigit() else text


def parse(raw: str, national: str | None = None) -> str:
    """The key of a number a person wrote (config, command line), checked to be possible.

    With `national` (a region such as "BE"), also `0470 12 34 56` as written in that country.
    Raises ValueError naming what is wrong.
    """
    text, region = _ascii_digits(raw.strip()), None
    if text.startswith("00"):
        text = "+" + text[2:]
    elif national and text.startswith("0"):
        region = national
    elif not text.startswith("+"):
        text = "+" + text
    try:
        number = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException as error:
        raise ValueError(f"{raw!r} is not a phone number ({error})") from None
    if not phonenumbers.is_possible_number(number):
        raise ValueError(f"{raw!r} is not a possible phone number")
    return key(phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164))


def region(code: str) -> str:
    """A country as two letters (`BE`), upper case; ValueError when there is no such region."""
    upper = code.strip().upper()
    if upper not in phonenumbers.SUPPORTED_REGIONS:
        raise ValueError(f"{code!r} is not a country code: give two letters, like BE or NL")
    return upper


def international(number: str) -> str:
    """Show a gateway number as `+32 470 12 34 56`. What is not a valid international number
    (a short code such as `12345678`, an alphanumeric sender) is shown as it came."""
    digits = key(number)
    if not digits.isdigit():
        return digits
    return _formatted(digits) or number.strip()


@remembered
def _formatted(digits: str) -> str | None:
    """The international form of these digits, None when they are no valid number. Kept
    like `key`: parsing costs the worker more than a post's database writes, and the same
    customers and lines come back message after message."""
    try:
        parsed = phonenumbers.parse("+" + digits, None)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(parsed):
        return None
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.INTERNATIONAL)


def mask(number: str) -> str:
    """A number fit for logs: `+32 470 •• •• 56` (country, first group and last two digits)."""
    number = key(number)
    shown = international(number)
    if not number.isdigit():
        return shown[:2] + "•" * max(len(shown) - 2, 0)
    groups = shown.split(" ")
    if len(groups) < 3:
        return "+" + number[:2] + "•" * max(len(number) - 4, 0) + number[-2:]
    head, middle, last = groups[:2], groups[2:], groups[-1]
    masked = [_DIGITS.sub("•", group) for group in middle[:-1]]
    masked.append(_DIGITS.sub("•", last[:-2]) + last[-2:])
    return " ".join(head + masked)
