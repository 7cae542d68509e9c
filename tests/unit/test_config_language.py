"""Config: `language` at the top level and per destination; a wrong one names file and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.config import ConfigError, from_environment, from_settings, load
from bridge.config import build as build_config
from bridge.settings import Settings

ENV = {"SLACK_BOT_TOKEN": "xoxb-test", "TELEGRAM_BOT_TOKEN": "123:abc"}

TWO = """
language: nl
destinations:
  nl-team:  {slack: {channel: C0SUPPORT}}
  fr-team:  {telegram: {chat_id: -1001234567890}, language: fr}
  on-call:  {console: {}}
default: [nl-team, fr-team]
alerts: {to: [on-call]}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "bridge.yaml"
    path.write_text(text)
    return path


def test_english_is_the_default_for_every_destination(tmp_path: Path) -> None:
    config = load(write(tmp_path, "destinations: {a: {console: {}}}\ndefault: [a]\n"), ENV)
    assert config.destinations["a"].language == "en"


def test_a_destination_s_language_overrides_the_top_level_one(tmp_path: Path) -> None:
    config = load(write(tmp_path, TWO), ENV)
    languages = {name: d.language for name, d in config.destinations.items()}
    assert languages == {"nl-team": "nl", "fr-team": "fr", "on-call": "nl"}


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("language: de\ndestinations: {a: {console: {}}}\n", "language"),
        ("destinations: {a: {console: {}, language: NL}}\n", "destinations.a.language"),
    ],
)
def test_an_unknown_language_is_refused_naming_file_and_key(
    tmp_path: Path, text: str, key: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load(path, ENV)
    assert caught.value.problems == [f"{path}: {key}: write one of 'en', 'nl' or 'fr'"]


def test_bridge_language_sets_the_language_of_a_config_built_from_the_environment() -> None:
    document = from_environment({"SLACK_CHANNEL": "C0SUPPORT", "BRIDGE_LANGUAGE": "fr"})
    assert document is not None and document["language"] == "fr"
    config = build_config(document, "the environment", ENV)
    assert {d.language for d in config.destinations.values()} == {"fr"}
    alone = from_environment({"BRIDGE_LANGUAGE": "nl"})
    assert alone is not None and alone["destinations"] == {"console": {"console": {}}}


def test_an_unknown_bridge_language_names_the_variable() -> None:
    with pytest.raises(ConfigError) as caught:
        from_environment({"BRIDGE_LANGUAGE": "de"})
    assert caught.value.problems == ["BRIDGE_LANGUAGE: 'de' is not a language: write en, nl or fr"]


def test_check_config_says_which_destinations_write_in_another_language(tmp_path: Path) -> None:
    config = load(write(tmp_path, TWO), ENV)
    described = {name: d.describe() for name, d in config.destinations.items()}
    assert described["fr-team"] == "telegram chat -1001234567890, in French"
    assert described["on-call"] == "console (stdout), in Dutch"
    english = load(write(tmp_path, "destinations: {a: {console: {}}}\n"), ENV)
    assert english.destinations["a"].describe() == "console (stdout)"


def test_bridge_language_alone_turns_the_built_in_console_s_language() -> None:
    settings = Settings.from_env({"BRIDGE_LANGUAGE": "fr", "BRIDGE_CONFIG": ""})
    config = from_settings(settings)
    assert {name: d.language for name, d in config.destinations.items()} == {"console": "fr"}
