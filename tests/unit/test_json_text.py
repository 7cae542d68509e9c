"""The webhook path's JSON: orjson's speed without a value `json` would read differently."""

from __future__ import annotations

import json

import pytest

from bridge import json_text

BEYOND_64_BITS = [-(2**63) - 1, 2**64, 10**30, -(10**25)]


@pytest.mark.parametrize("number", BEYOND_64_BITS)
def test_an_integer_past_64_bits_is_read_exactly(number: int) -> None:
    body = json.dumps([{"price": number, "id": "x"}]).encode()
    assert json_text.read(body) == [{"price": number, "id": "x"}]
    assert json.loads(json_text.compact(json_text.read(body)[0]))["price"] == number


def test_a_body_orjson_refuses_is_read_as_json_reads_it() -> None:
    for body in (
        json.dumps([{"a": "é"}]).encode("utf-16"),
        b'[{"a": NaN}]',
        b"\xef\xbb\xbf[1]",
    ):
        document = json_text.read(body)
        assert isinstance(document, list) and document
    assert json_text.read(b'[{"a": NaN}]')[0]["a"] != json_text.read(b'[{"a": NaN}]')[0]["a"]


def test_lone_surrogates_and_nul_are_made_storable() -> None:
    assert json_text.read(b'["a\\u0000b", "\\ud800"]') == ["a\ufffdb", "\ufffd"]


def test_not_json_raises_as_json_loads_does() -> None:
    for body in (b"[", b"{'a': 1}", b'["a\x00"]'):
        with pytest.raises(ValueError):
            json_text.read(body)
    with pytest.raises(UnicodeDecodeError):
        json_text.read(b"\xff\xfe\xfd")


def test_compact_keeps_text_as_it_is_and_numbers_exact() -> None:
    value = {"content": "Bonjour 😀 <!channel>", "n": 10**30, "f": 0.1}
    text = json_text.compact(value)
    assert "😀" in text and ", " not in text and json.loads(text) == value


def test_nan_is_stored_as_null() -> None:
    assert json_text.compact({"a": float("nan")}) == '{"a":null}'


def test_an_encoded_lone_surrogate_is_made_storable() -> None:
    assert json_text.read(b'[{"a": "\xed\xa0\x80"}]') == [{"a": "\ufffd"}]
    assert json_text.compact({"a": "\ufffd"}).encode()  # storable as UTF-8
