"""Config: typed, validated, and every problem names the file and the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.config import ConfigError, load, missing_tokens, parse_duration

ENV = {"SLACK_BOT_TOKEN": "xoxb-test", "TELEGRAM_BOT_TOKEN": "123:abc"}

EXAMPLE = """
destinations:
  support:  {slack: {channel: C0SUPPORT}}
  nl-team:  {telegram: {chat_id: -1001234567890, topics: true}}
  log:      {console: {}}
routes:
  - match: {receiver: "+32 460 20 00 00", type: whatsapp}
    to: [nl-team]
  - match: {receiver: "3246*"}
    to: [support, log]
default: [support]
lines:
  "+32 460 20 00 00": Support line
threads:
  idle_after: 7d
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "bridge.yaml"
    path.write_text(text)
    return path


def problems(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load(write(tmp_path, text), ENV if env is None else env)
    return caught.value.problems


def test_the_documented_example_loads(tmp_path: Path) -> None:
    config = load(write(tmp_path, EXAMPLE), ENV)
    assert list(config.destinations) == ["support", "nl-team", "log"]
    whatsapp, prefix = config.routes
    assert (whatsapp.receiver, whatsapp.receiver_is_prefix, whatsapp.type) == (
        "32460200000",
        False,
        "whatsapp",
    )
    assert (prefix.receiver, prefix.receiver_is_prefix, prefix.to) == (
        "3246",
        True,
        ("support", "log"),
    )
    assert config.lines == {"32460200000": "Support line"}
    assert config.idle_after == 7 * 86400
    assert config.default == ("support",)


def test_without_a_file_everything_goes_to_the_console() -> None:
    config = load(None, {})
    assert [d.kind for d in config.destinations.values()] == ["console"]
    assert config.default == ("console",)


def test_an_unknown_key_is_named_with_the_file(tmp_path: Path) -> None:
    text = EXAMPLE.replace('{receiver: "3246*"}', '{receiver: "3246*", recevier: x}')
    path = tmp_path / "bridge.yaml"
    assert problems(tmp_path, text) == [
        f"{path}: routes[1].match.recevier: unknown key (did you mean 'receiver'? known here: "
        "receiver, type)"
    ]


def test_an_unknown_destination_in_a_route_is_refused(tmp_path: Path) -> None:
    text = EXAMPLE.replace("to: [nl-team]", "to: [nl-teem]")
    (problem,) = problems(tmp_path, text)
    assert "routes[0].to[0]: unknown destination 'nl-teem'" in problem


def test_a_missing_token_leaves_the_config_usable_and_names_the_variable(
    tmp_path: Path,
) -> None:
    config = load(write(tmp_path, EXAMPLE), {"SLACK_BOT_TOKEN": "xoxb-test"})
    assert set(config.destinations) == {"support", "nl-team", "log"}
    assert missing_tokens(config, {"SLACK_BOT_TOKEN": "xoxb-test"}) == {
        "nl-team": "TELEGRAM_BOT_TOKEN"
    }
    assert missing_tokens(config, ENV) == {}


def test_a_bad_number_is_refused_with_its_key(tmp_path: Path) -> None:
    text = EXAMPLE.replace('"+32 460 20 00 00", type', '"+32 46O", type')
    (problem,) = problems(tmp_path, text)
    assert "routes[0].match.receiver:" in problem and "phone number" in problem


def test_a_bad_duration_is_refused_with_its_key(tmp_path: Path) -> None:
    (problem,) = problems(tmp_path, EXAMPLE.replace("idle_after: 7d", "idle_after: 7 days"))
    assert "threads.idle_after: '7 days' is not a duration" in problem


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    text = EXAMPLE.replace("to: [nl-team]", "to: [x]").replace("default: [support]", "default: [y]")
    assert len(problems(tmp_path, text)) == 2


def test_a_destination_needs_exactly_one_platform(tmp_path: Path) -> None:
    text = EXAMPLE.replace("log:      {console: {}}", "log: {}")
    (problem,) = problems(tmp_path, text)
    assert "destinations.log: give exactly one of slack, telegram or console" in problem


def test_unreadable_and_invalid_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the config"):
        load(tmp_path / "missing.yaml", ENV)
    assert "not valid YAML" in problems(tmp_path, "destinations: [")[0]


@pytest.mark.parametrize(
    ("text", "seconds"), [("30s", 30), ("5m", 300), ("4h", 14400), ("7d", 604800), (12, 12)]
)
def test_durations(text: str | int, seconds: float) -> None:
    assert parse_duration(text) == seconds


def test_retention_has_documented_defaults_and_takes_durations(tmp_path: Path) -> None:
    default = load(write(tmp_path, EXAMPLE), ENV).retention
    assert (default.raw_bodies, default.content) == (30 * 86400, 30 * 86400)
    assert (default.done_jobs, default.dead_letters) == (7 * 86400, 30 * 86400)
    assert default.describe() == (
        "raw bodies 30d, message content 30d, done jobs 7d, dead letters 30d"
    )
    tuned = load(
        write(tmp_path, EXAMPLE + "retention: {raw_bodies: 2d, content: 90d, done_jobs: 12h}\n"),
        ENV,
    ).retention
    assert (tuned.raw_bodies, tuned.content, tuned.done_jobs) == (2 * 86400, 90 * 86400, 43200)
    assert tuned.dead_letters == 30 * 86400


def test_retention_refuses_unknown_keys_and_bad_durations(tmp_path: Path) -> None:
    found = problems(tmp_path, EXAMPLE + "retention: {bodies: 2d, content: forever}\n")
    assert f"{tmp_path / 'bridge.yaml'}: retention.bodies: unknown key (did you mean " in found[1]
    assert any(p.startswith(f"{tmp_path / 'bridge.yaml'}: retention.content: ") for p in found)
