"""JSON as the webhook path reads and stores it: orjson for the usual body, `json` for what
orjson refuses and JSON (as Python reads it) allows.

orjson reads a webhook body and writes an event back several times faster than `json`, which
the webhook path does for every request. It refuses some bodies `json` reads: UTF-16 or
UTF-32 text, `NaN`, lone surrogates (`\\ud800`); and it reads an integer past 64 bits as a
float, so a body with a run of 19 digits or more (`_LONG_RUN`) skips it. Those go to `json`,
which keeps what it did before: a number of over 4,000 digits is read as a float, and text is
made storable (`_storable`). Either way the event that comes out is the same Python value.
"""

from __future__ import annotations

import json
import re
from typing import Any

import orjson

# An event as stored: compact JSON (`json.dumps` with options builds an encoder per call).
_COMPACT = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
# Every integer of 18 digits or fewer fits in 64 bits; a run of 19 digits or more (a number, or
# digits in a string) sends the body to `json`. Found as a run of zeros once every digit is
# one: a fifth of what a regular expression takes.
_DIGITS_AS_ZERO = bytes.maketrans(b"123456789", b"0" * 9)
_LONG_RUN = b"0" * 19


def read(body: bytes) -> Any:
    """The JSON document in `body`, its strings made storable. Raises `UnicodeDecodeError`,
    `RecursionError` or `ValueError` (not JSON), as `json.loads` does."""
    if _LONG_RUN not in body.translate(_DIGITS_AS_ZERO):
        try:
            document = orjson.loads(body)
        except orjson.JSONDecodeError:  # not JSON, or JSON orjson does not read
            return _read_with_json(body)
        # orjson takes neither lone surrogates nor invalid UTF-8: only `\u0000` needs scrubbing.
        return _storable(document) if b"\\u0000" in body else document
    return _read_with_json(body)


def _read_with_json(body: bytes) -> Any:
    """The rare body: scrubbed whatever it holds (`surrogatepass` lets an encoded lone
    surrogate through, as `json` reads it)."""
    return _storable(_DECODER.decode(body.decode(json.detect_encoding(body), "surrogatepass")))


def compact(value: Any) -> str:
    """`value` as compact JSON text, non-ASCII characters as they are. `NaN` and infinities,
    which JSON has no words for (only a body `json` read can hold them), are written `null`:
    the raw body keeps them."""
    try:
        return orjson.dumps(value).decode()
    except TypeError:  # an integer past 64 bits, which `json` writes
        return _COMPACT.encode(value)


def _storable(value: Any) -> Any:
    """Every string made storable text: NUL (refused by PostgreSQL TEXT) and lone surrogates
    (JSON allows `\\ud800`, UTF-8 does not) become U+FFFD. The raw body keeps the original.
    Only a `\\u` escape can put either in a UTF-8 body (raw control characters are not JSON);
    a UTF-16 or UTF-32 body has NUL bytes and is scrubbed."""
    if isinstance(value, str):
        return _UNSTORABLE.sub("\ufffd", value)
    if isinstance(value, list):
        return [_storable(item) for item in value]
    if isinstance(value, dict):
        return {_storable(key): _storable(item) for key, item in value.items()}
    return value


def _integer(digits: str) -> int | float:
    # Python refuses to read ints of more than 4300 digits; valid JSON all the same, and no
    # field we use is one. Keep the event (the raw body keeps the exact digits).
    return int(digits) if len(digits) <= 4000 else float(digits)


# `json.loads(body, parse_int=…)`, with its decoder built once instead of for every body.
_DECODER = json.JSONDecoder(parse_int=_integer)
