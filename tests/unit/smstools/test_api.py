"""The Smstools API's errors classified, and its client built from settings."""

from __future__ import annotations

from bridge.errors import Reason
from bridge.settings import Settings
from bridge.smstools.api import (
    SmstoolsApi,
    SmstoolsPermanent,
    classify,
)


def test_a_text_error_without_a_code_is_shown_as_given() -> None:
    error = classify(400, {"error": "error parsing json"})
    assert isinstance(error, SmstoolsPermanent)
    assert error.code is None and error.detail == "Smstools API: error parsing json"
    assert classify(401, None).reason is Reason.AUTH
    assert classify(200, None).detail == "Smstools API: the answer is not JSON"


def test_the_client_comes_from_settings_only_with_both_credentials() -> None:
    assert SmstoolsApi.from_settings(Settings.from_env({})) is None
    assert SmstoolsApi.from_settings(Settings.from_env({"SMSTOOLS_CLIENT_ID": "id"})) is None
    settings = Settings.from_env(
        {"SMSTOOLS_CLIENT_ID": " id ", "SMSTOOLS_CLIENT_SECRET": "s3cret-value"}
    )
    assert settings.smstools_api_url == "https://api.smsgatewayapi.com/v1"
    assert settings.smstools_client_id == "id"
    assert "s3cret-value" not in repr(settings)
    assert SmstoolsApi.from_settings(settings) is not None
