"""What the doctor asks of each destination, read from the config alone."""

from __future__ import annotations

from pathlib import Path

from bridge.config import load
from bridge.ops.doctor import needed_slack_scopes


def test_answering_from_slack_needs_history_reactions_and_users_and_posting_only_chat_write(
    tmp_path: Path,
) -> None:
    path = tmp_path / "bridge.yaml"
    path.write_text(
        "destinations:\n"
        "  answers: {slack: {channel: C0}, replies: true}\n"
        "  support: {slack: {channel: C1}}\n"
        "  oncall: {slack: {channel: C2}}\n"
        "default: [answers, support]\n"
        "alerts: {to: [oncall]}\n"
    )
    environ = {
        "SLACK_BOT_TOKEN": "xoxb-test",
        "SLACK_SIGNING_SECRET": "signing",
        "SMSTOOLS_CLIENT_ID": "id",
        "SMSTOOLS_CLIENT_SECRET": "secret",
    }
    config = load(path, environ)
    assert list(needed_slack_scopes(config, "answers")) == [
        "chat:write",
        "channels:history",
        "reactions:write",
        "users:read",
    ]
    assert list(needed_slack_scopes(config, "support")) == ["chat:write"]
    assert list(needed_slack_scopes(config, "oncall")) == ["chat:write"]
