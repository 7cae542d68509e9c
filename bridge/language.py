"""The words the bridge writes into chat, in a destination's language (`en`, `nl`, `fr`).

English is written in the code: each message is a gettext msgid, and `en` shows it as is.
Dutch and French come from the catalogs `bridge/locale/<language>/LC_MESSAGES/bridge.po`,
read with Babel once per process (no compiled `.mo` file to build or keep in step) and
compiled in memory; a fuzzy or empty translation is left out, so the English shows instead
(and `tests/static/test_catalogs.py` fails). Placeholders are named (`{count}`), so a
translation may put them in another order. Dates follow the language: English keeps the
gateway's own `2026-01-01 09:14:00`, Dutch and French read `1 jan 2026, 09:14:00` and
`1 janv. 2026, 09:14:00` (Babel's Belgian forms). Customer text, the gateway's status names
and its own descriptions are never translated: they do not pass through here.
"""

from __future__ import annotations

import gettext
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache
from io import BytesIO
from pathlib import Path
from typing import Literal

from babel.dates import format_date, format_datetime
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po

Language = Literal["en", "nl", "fr"]
LANGUAGES: tuple[Language, ...] = ("en", "nl", "fr")
DEFAULT: Language = "en"
# The Babel locale each language's dates are written in: Smstools' customers are Belgian.
LOCALES: dict[Language, str] = {"en": "en", "nl": "nl_BE", "fr": "fr_BE"}
DOMAIN = "bridge"
LOCALE_DIR = Path(__file__).parent / "locale"


def N_(message: str) -> str:
    """Mark a msgid for the catalogs where it is defined (a table); it is translated where it
    is shown, with `Words.gettext`."""
    return message


def catalog_path(language: Language) -> Path:
    """Where the catalog of `language` lives (English has none: the msgids are English)."""
    return LOCALE_DIR / language / "LC_MESSAGES" / f"{DOMAIN}.po"


@dataclass(frozen=True)
class Phrase:
    """Words to be said later, in a language not known yet: a msgid and the values of its
    placeholders (a value may be a Phrase itself). What is not the bridge's own words (the
    gateway's detail) goes in a value, or as a msgid no catalog has: it stays as it is."""

    msgid: str
    values: Mapping[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class Words:
    """One language's translator: messages, plurals and dates as its readers write them."""

    language: Language
    translations: gettext.NullTranslations

    def gettext(self, message: str, /, **values: object) -> str:
        """`message` in this language, its `{name}` placeholders filled from `values`."""
        text = self.translations.gettext(message)
        return text.format(**values) if values else text

    def say(self, phrase: Phrase) -> str:
        """`phrase` in this language, the phrases among its values too."""
        values = {
            name: self.say(value) if isinstance(value, Phrase) else value
            for name, value in phrase.values.items()
        }
        return self.gettext(phrase.msgid, **values)

    def ngettext(self, singular: str, plural: str, count: int, /, **values: object) -> str:
        """The form for `count` (`1 message`, `30 messages`); `{count}` is filled in too."""
        return self.translations.ngettext(singular, plural, count).format(count=count, **values)

    def stamp(self, value: datetime) -> str:
        """A date and time to the second: `2026-01-01 09:14:00`, `1 jan 2026, 09:14:00`."""
        if self.language == "en":
            return value.strftime("%Y-%m-%d %H:%M:%S")
        return format_datetime(value, "medium", tzinfo=value.tzinfo, locale=LOCALES[self.language])

    def zoned(self, value: datetime) -> str:
        """A date and time to the minute with its zone: `2026-01-01 09:14 CET`,
        `1 jan 2026 09:14 CET`."""
        if self.language == "en":
            return value.strftime("%Y-%m-%d %H:%M %Z")
        day = format_date(value, "medium", locale=LOCALES[self.language])
        return f"{day} {value.strftime('%H:%M %Z')}".rstrip()


@cache
def words(language: Language = DEFAULT) -> Words:
    """The translator of `language`, its catalog read on first use and kept."""
    if language == DEFAULT:
        return Words(language, gettext.NullTranslations())
    with catalog_path(language).open("rb") as source:
        catalog = read_po(source, locale=LOCALES[language], domain=DOMAIN)
    compiled = BytesIO()
    write_mo(compiled, catalog, use_fuzzy=False)
    compiled.seek(0)
    return Words(language, gettext.GNUTranslations(compiled))


ENGLISH = words(DEFAULT)  # the msgids themselves: what a caller that names no language gets
