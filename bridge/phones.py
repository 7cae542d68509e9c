"""Phone numbers: one canonical form (E.164 digits) in, readable and masked forms out."""

from __future__ import annotations

import re

import phonenumbers

_DIGITS = re.compile(r"\d")


def e164_digits(raw: str, national: str | None = None) -> str:
    """Parse a number in any common format into E.164 digits without `+` (`32470123456`).

    Accepts `+32 470 12 34 56`, `0032470123456` and the gateway's bare `32470123456`; with
    `national` (a region such as "BE"), also `0470 12 34 56` as written in that country.
    Raises ValueError naming what is wrong.
    """
    text, region = raw.strip(), None
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
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)[1:]


def international(number: str) -> str:
    """Show a gateway number as `+32 470 12 34 56`; alphanumeric senders stay as they are."""
    if not number.isdigit():
        return number
    try:
        parsed = phonenumbers.parse("+" + number, None)
    except phonenumbers.NumberParseException:
        return "+" + number
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.INTERNATIONAL)


def mask(number: str) -> str:
    """A number fit for logs: `+32 470 •• •• 56` (country, first group and last two digits)."""
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
