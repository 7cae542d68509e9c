"""Every word the bridge writes into chat exists in all three languages.

The template `bridge/locale/bridge.pot` must hold exactly the messages the code marks (so a
new English string without `make catalogs` fails here), and the Dutch and French catalogs a
translation of each, not fuzzy, with the same placeholders, so a translation never drops or
misnames a value.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from babel.messages.catalog import Catalog, Message
from babel.messages.extract import DEFAULT_KEYWORDS, extract_from_dir
from babel.messages.pofile import read_po

from bridge import language

TEMPLATE = language.LOCALE_DIR / f"{language.DOMAIN}.pot"
TRANSLATED = [code for code in language.LANGUAGES if code != language.DEFAULT]
PLACEHOLDER = re.compile(r"\{(\w*)\}")


def read(path: Path) -> Catalog:
    with path.open("rb") as source:
        return read_po(source)


def ids(catalog: Catalog) -> set[str | tuple[str, ...]]:
    return {message.id for message in catalog if message.id}


def singular(message: Message) -> str:
    return message.id[0] if isinstance(message.id, tuple) else message.id


def extracted() -> set[str | tuple[str, ...]]:
    """The msgids the code marks now, as `make catalogs` extracts them."""
    keywords = {**DEFAULT_KEYWORDS, "Phrase": None}
    found = extract_from_dir(
        str(language.LOCALE_DIR.parent), [("**.py", "python")], keywords=keywords
    )
    return {message for _, _, message, _, _ in found}


def test_the_template_holds_exactly_the_messages_the_code_marks() -> None:
    current = extracted()
    template = ids(read(TEMPLATE))
    assert current - template == set(), "new messages: run `make catalogs` and translate them"
    assert template - current == set(), "messages no longer used: run `make catalogs`"
    assert len(template) > 100  # the extraction found the bridge's words at all


@pytest.mark.parametrize("code", TRANSLATED)
def test_every_message_has_a_finished_translation(code: language.Language) -> None:
    catalog = read(language.catalog_path(code))
    assert ids(catalog) == ids(read(TEMPLATE)), f"run `make catalogs` for {code}"
    unfinished = [
        singular(message)
        for message in catalog
        if message.id
        and (
            message.fuzzy
            or not all(message.string if isinstance(message.string, tuple) else (message.string,))
        )
    ]
    assert unfinished == []


@pytest.mark.parametrize("code", TRANSLATED)
def test_translations_keep_every_placeholder(code: language.Language) -> None:
    catalog = read(language.catalog_path(code))
    for message in catalog:
        if not message.id:
            continue
        wanted = set(PLACEHOLDER.findall(singular(message)))
        forms = message.string if isinstance(message.string, tuple) else (message.string,)
        for form in forms:
            assert set(PLACEHOLDER.findall(form)) == wanted, (singular(message), form)


@pytest.mark.parametrize("code", TRANSLATED)
def test_the_catalog_loads_and_translates(code: language.Language) -> None:
    words = language.words(code)
    assert words.gettext("Receivers:") != "Receivers:"
    assert words.ngettext(
        "{count} message from {senders} not sent",
        "{count} messages from {senders} not sent",
        30,
        senders="Clinic",
    ).startswith("30 ")


def test_the_catalogs_ship_with_the_package() -> None:
    pyproject = (language.LOCALE_DIR.parent.parent / "pyproject.toml").read_text()
    assert '"locale/*/LC_MESSAGES/*.po"' in pyproject
    for code in TRANSLATED:
        assert language.catalog_path(code).is_file()
