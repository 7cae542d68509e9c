"""Customer text made safe to show on any platform: it reads as it was written.

Bidi embeddings and overrides (U+202A–U+202E) and isolates (U+2066–U+2069) make text display
in another order than it was written ("gnp.exe" shown as "exe.png"); zero-width spaces, word
joiners, invisible operators and the BOM hide where words start and end. They are removed
before an adapter escapes the text; the database keeps the text as received. The zero-width
(non-)joiners U+200C/U+200D stay: emoji sequences and several scripts are written with them.
"""

from __future__ import annotations

import re

_MISLEADING = re.compile("[\u202a-\u202e\u2066-\u2069\u200b\u2060-\u2064\ufeff\u180e]")


def neutralise(text: str) -> str:
    """`text` without direction overrides and invisible characters."""
    return _MISLEADING.sub("", text)
