"""The two Slack app manifests (HTTP request URL, Socket Mode) create the same app but for how
events arrive, and hold every scope the bridge's fake Slack grants a fresh install."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from testkit.fakes.slack import DEFAULT_SCOPES

CONFIG = Path(__file__).parents[2] / "config"


def manifest(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((CONFIG / name).read_text())
    return loaded


def test_the_socket_mode_manifest_differs_from_the_http_one_only_in_how_events_arrive() -> None:
    http, socket_mode = (
        manifest("slack-app-manifest.yaml"),
        manifest("slack-app-manifest-socket-mode.yaml"),
    )
    assert http["settings"]["event_subscriptions"]["request_url"].endswith("/slack/events")
    assert http["settings"]["socket_mode_enabled"] is False
    assert "request_url" not in socket_mode["settings"]["event_subscriptions"]
    assert socket_mode["settings"]["socket_mode_enabled"] is True
    del http["settings"]["event_subscriptions"]["request_url"]
    http["settings"]["socket_mode_enabled"] = True
    assert http == socket_mode
    assert set(socket_mode["oauth_config"]["scopes"]["bot"]) == set(DEFAULT_SCOPES)
