"""The `alerts` config section: inherited settings, matchers, and errors that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.cli import check_config
from bridge.config import ConfigError, load
from bridge.settings import Settings

ENV = {"SLACK_BOT_TOKEN": "xoxb-test", "TELEGRAM_BOT_TOKEN": "123:abc"}

BASE = """
destinations:
  oncall:   {slack: {channel: C0ONCALL}}
  billing:  {slack: {channel: C0BILLING}}
  tg:       {telegram: {chat_id: -100123}}
default: [oncall]
"""

ALERTS = """
alerts:
  to: [oncall]
  on_codes: [2, 4, 5]
  group_wait: 30s
  group_interval: 5m
  repeat_interval: 4h
  mention: "<!subteam^S0ONCALL>"
  routes:
    - match: {delivery_code_detail: [2000]}
      to: [billing, oncall]
      group_wait: 0s
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "bridge.yaml"
    path.write_text(text)
    return path


def problems(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load(write(tmp_path, BASE + text), ENV)
    return caught.value.problems


def test_routes_inherit_what_they_do_not_set_and_the_first_match_wins(tmp_path: Path) -> None:
    config = load(write(tmp_path, BASE + ALERTS), ENV)
    assert config.alerts is not None
    funds = config.alerts.route_for({"delivery_code_detail": "2000", "sender": "Clinic"})
    assert funds is config.alerts.routes[0] and funds.to == ("billing", "oncall")
    assert (funds.group_wait, funds.group_interval, funds.repeat_interval) == (0, 300, 14400)
    assert funds.group_by == ("delivery_code_detail", "sender")
    assert funds.mention["slack"] == "<!subteam^S0ONCALL>"
    other = config.alerts.route_for({"delivery_code_detail": "10"})
    assert other is config.alerts.top and other.to == ("oncall",) and other.group_wait == 30
    assert config.alerts.on_codes == {2, 4, 5}


def test_alerts_are_off_without_the_section(tmp_path: Path) -> None:
    assert load(write(tmp_path, BASE), ENV).alerts is None


def test_every_alerts_problem_names_its_key(tmp_path: Path) -> None:
    found = problems(
        tmp_path,
        """
alerts:
  to: [pager]
  group_wait: soon
  group_by: [colour]
  routes:
    - match: {delivery_code_detail: [funds]}
    - match: {weather: [rain]}
      to: [billing, nobody]
    - match: {sender: []}
""",
    )
    text = "\n".join(found)
    assert "alerts.group_wait: 'soon' is not a duration" in text
    # The duration error stops validation before names are checked: fix, then run again.
    found = problems(
        tmp_path,
        """
alerts:
  to: [pager]
  group_by: [colour]
  routes:
    - match: {delivery_code_detail: [funds]}
    - match: {weather: [rain]}
      to: [billing, nobody]
    - match: {sender: []}
""",
    )
    text = "\n".join(found)
    assert "alerts.to[0]: unknown destination 'pager'" in text
    assert "alerts.group_by[0]: unknown label 'colour'" in text
    assert "alerts.routes[0].match.delivery_code_detail: codes are numbers" in text
    assert "alerts.routes[1].match.weather: unknown label" in text
    assert "alerts.routes[1].to[1]: unknown destination 'nobody'" in text
    assert "alerts.routes[2].match.sender: give at least one value" in text
    assert all(problem.startswith(str(tmp_path)) for problem in found)


def test_slack_markup_is_refused_as_a_telegram_mention(tmp_path: Path) -> None:
    (problem,) = problems(tmp_path, 'alerts: {to: [tg], mention: "<!subteam^S0ONCALL>"}\n')
    assert "alerts.mention" in problem and "'tg' is a Telegram destination" in problem
    config = load(
        write(
            tmp_path,
            BASE + "alerts: {to: [tg, oncall], mention: {slack: '<!here>', telegram: '@ops'}}\n",
        ),
        ENV,
    )
    assert config.alerts is not None
    assert dict(config.alerts.routes[-1].mention) == {"slack": "<!here>", "telegram": "@ops"}


def test_check_config_prints_the_alert_routes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = Settings.from_env(ENV)
    assert check_config(write(tmp_path, BASE + ALERTS), settings) == 0
    out = capsys.readouterr().out
    assert "alerts on delivery codes 2, 4, 5 (first match wins):" in out
    assert "delivery_code_detail in [2000] → billing, oncall" in out
    assert "every failure → oncall (group by delivery_code_detail, sender; wait 30s" in out
    assert "quiet after 300s; pages for account-wide codes or above 20; lone failures" in out
    assert check_config(write(tmp_path, BASE + "alerts: {to: [pager]}\n"), settings) == 1
    assert "alerts.to[0]: unknown destination 'pager'" in capsys.readouterr().err


def test_a_negative_page_above_names_the_file_and_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as raised:
        load(write(tmp_path, BASE + "alerts: {to: [oncall], page_above: -1}\n"), ENV)
    assert "alerts.page_above" in str(raised.value)
    assert str(tmp_path) in str(raised.value)


def test_an_unknown_lone_failures_value_names_the_file_and_key(tmp_path: Path) -> None:
    found = problems(
        tmp_path,
        "alerts:\n  to: [oncall]\n  lone_failures: drop\n"
        "  routes: [{match: {sender: [Clinic]}, lone_failures: mute}]\n",
    )
    top, route = sorted(found)
    assert top.startswith(f"{tmp_path / 'bridge.yaml'}: alerts.lone_failures: ")
    assert route.startswith(f"{tmp_path / 'bridge.yaml'}: alerts.routes[0].lone_failures: ")
    assert all("'post' or 'note'" in problem for problem in found)
