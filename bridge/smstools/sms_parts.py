"""How many SMS parts a text takes: GSM-7 when every character fits, else UCS-2.

GSM 03.38: the basic table costs one septet per character, the extension table (`^{}[]~|€\\`
and form feed) two. One part holds 160 septets (70 UCS-2 code units); a concatenated message
loses room to its header: 153 septets (67 code units) per part.
"""

from __future__ import annotations

import math

_BASIC = set(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
_EXTENSION = set("^{}\\[~]|€\f")


def gsm7_length(text: str) -> int | None:
    """Septets the text takes in GSM-7, or None when a character is not in the alphabet."""
    length = 0
    for character in text:
        if character in _BASIC:
            length += 1
        elif character in _EXTENSION:
            length += 2
        else:
            return None
    return length


def parts(text: str) -> int:
    """SMS parts needed to send `text` (0 for the empty text)."""
    septets = gsm7_length(text)
    if septets is not None:
        single, multi, length = 160, 153, septets
    else:
        single, multi, length = 70, 67, len(text.encode("utf-16-le")) // 2
    if length <= single:
        return 1 if length else 0
    return math.ceil(length / multi)


def encoding(text: str) -> str:
    return "GSM-7" if gsm7_length(text) is not None else "UCS-2"
