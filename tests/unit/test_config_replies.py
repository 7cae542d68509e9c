"""The replies section of the config: what it needs and refuses."""

from __future__ import annotations

import copy

import pytest

from bridge.config import ConfigError, build
from tests.support.reply_fixtures import CONFIG


def test_replies_need_the_send_api_and_the_platform_secret() -> None:
    with pytest.raises(ConfigError) as refused:
        build(
            copy.deepcopy(CONFIG),
            "bridge.yaml",
            {"SLACK_BOT_TOKEN": "x", "TELEGRAM_BOT_TOKEN": "1:x"},
        )
    problems = "\n".join(refused.value.problems)
    assert "bridge.yaml: destinations.support.replies" in problems
    assert "SMSTOOLS_CLIENT_ID, SMSTOOLS_CLIENT_SECRET, SLACK_SIGNING_SECRET" in problems
    assert "TELEGRAM_WEBHOOK_SECRET" not in problems  # generated when unset


def test_unknown_replies_keys_are_refused_naming_the_key() -> None:
    document = copy.deepcopy(CONFIG)
    document["destinations"]["support"]["replies"] = {"prefx": "note:"}
    with pytest.raises(ConfigError) as refused:
        build(document, "bridge.yaml", {"SLACK_BOT_TOKEN": "x", "TELEGRAM_BOT_TOKEN": "1:x"})
    assert any("destinations.support.replies" in p and "prefx" in p for p in refused.value.problems)


def test_slack_replies_need_a_signing_secret_or_an_app_token_for_socket_mode() -> None:
    environ = {
        "SLACK_BOT_TOKEN": "x",
        "TELEGRAM_BOT_TOKEN": "1:x",
        "SMSTOOLS_CLIENT_ID": "id",
        "SMSTOOLS_CLIENT_SECRET": "secret",
    }
    with pytest.raises(ConfigError) as refused:
        build(copy.deepcopy(CONFIG), "bridge.yaml", environ)
    assert any(
        "SLACK_SIGNING_SECRET or SLACK_APP_TOKEN" in problem for problem in refused.value.problems
    )
    for variable in ("SLACK_SIGNING_SECRET", "SLACK_APP_TOKEN"):
        build(copy.deepcopy(CONFIG), "bridge.yaml", environ | {variable: "xapp-1"})
