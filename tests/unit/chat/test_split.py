"""Splitting long text: nothing lost, lines then sentences then words kept whole."""

from __future__ import annotations

from bridge.chat.split import cut, split


def test_pieces_join_back_to_the_text_and_each_fits() -> None:
    text = "Hello there. " * 50 + "x" * 100
    pieces = split(text, 120)
    assert "".join(pieces) == text
    assert all(0 < len(piece) <= 120 for piece in pieces)


def test_a_split_prefers_a_sentence_end_to_a_word_end() -> None:
    text = "The parcel left the depot this morning. It reaches you tomorrow before noon, promised"
    first, *rest = split(text, 60)
    assert first == "The parcel left the depot this morning. "
    assert "".join(rest) == "It reaches you tomorrow before noon, promised"


def test_a_line_end_beats_a_sentence_end_and_quotes_close_the_sentence() -> None:
    assert cut("First line is here\nSecond. Third words go on", 30) == len("First line is here\n")
    said = 'He said "Fine." and then some more words after'
    assert cut(said, 30) == len('He said "Fine." ')


def test_without_a_sentence_end_a_split_falls_on_a_word_end() -> None:
    text = "one two three four five six seven eight nine ten eleven"
    first, *_ = split(text, 30)
    assert first == "one two three four five six "


def test_a_word_is_cut_only_when_it_is_longer_than_a_part() -> None:
    text = "short " + "y" * 100
    pieces = split(text, 40)
    assert pieces[0] == "short " and all(len(piece) <= 40 for piece in pieces)
    assert "".join(pieces) == text
