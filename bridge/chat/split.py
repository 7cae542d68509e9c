"""Split long untrusted text into pieces that fit a platform limit, without losing a character.

Adapters split the *raw* text and escape each piece afterwards, so an escape sequence such as
`&amp;` is never cut in half; `size` measures a piece as the platform will (after escaping, in
UTF-16 units, with a quote prefix...). Joining the pieces gives back the original text exactly.
"""

from __future__ import annotations

import re
from collections.abc import Callable

# The end of a sentence: its mark, any closing quote or bracket, then the space after it.
_SENTENCE_END = re.compile(r"[.!?…。][)\]\"'»”’]*\s")

Size = Callable[[str], int]


def cut(text: str, limit: int, size: Size = len) -> int:
    """How many leading characters of `text` to take so that `size(piece) <= limit`.

    The cut moves back to just after a line end or else a sentence end lying in the second
    half of the piece, else to just after the last space: lines and sentences stay whole where
    that costs little, and a word is cut only when it is longer than a whole piece. Returns 0
    when not one character fits.
    """
    if size(text) <= limit:
        return len(text)
    low, high = 0, len(text)  # size(text[:low]) fits, size(text[:high]) does not
    while high - low > 1:
        middle = (low + high) // 2
        if size(text[:middle]) <= limit:
            low = middle
        else:
            high = middle
    position = text.rfind("\n", 0, low)
    if position >= low // 2:
        return position + 1
    sentence_ends = [end.end() for end in _SENTENCE_END.finditer(text, 0, low)]
    if sentence_ends and sentence_ends[-1] >= low // 2:
        return sentence_ends[-1]
    position = text.rfind(" ", 0, low)
    if position > 0:
        return position + 1  # a word is cut only when it is longer than a piece
    return low


def split(text: str, limit: int, size: Size = len) -> list[str]:
    """Cut `text` into consecutive pieces each within `limit`; `"".join(pieces) == text`."""
    pieces: list[str] = []
    while size(text) > limit:
        length = cut(text, limit, size)
        if length == 0:
            raise ValueError(f"limit {limit} is too small for even one character")
        pieces.append(text[:length])
        text = text[length:]
    pieces.append(text)
    return pieces
