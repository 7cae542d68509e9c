"""The deployment files stay true: each parses, names only real `smsbridge` commands, and
describes every environment variable the bridge reads.

app.json (Heroku), render.yaml (Render), Dockerfile, Procfile, .python-version and
requirements.txt cannot be deployed from here, so they are checked statically.
"""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from starlette.routing import Route

from bridge import settings as settings_module
from bridge.app import create_app
from bridge.cli import build_parser
from bridge.config import SlackTarget, TelegramTarget, load
from bridge.settings import Settings

ROOT = Path(__file__).parents[2]
# app.json's top-level keys (Heroku's app.json schema).
APP_JSON_KEYS = {
    "name",
    "description",
    "keywords",
    "website",
    "repository",
    "logo",
    "success_url",
    "scripts",
    "env",
    "formation",
    "addons",
    "buildpacks",
    "environments",
    "stack",
    "image",
}
APP_JSON_ENV_KEYS = {"description", "value", "required", "generator"}


def bridge_variables() -> set[str]:
    """Every variable the bridge reads: settings, the default token variables, LOG_LEVEL."""
    token_defaults = {
        SlackTarget.model_fields["token_env"].default,
        TelegramTarget.model_fields["token_env"].default,
    }
    return {*settings_module.VARIABLES, *token_defaults, "LOG_LEVEL"}


def is_smsbridge_command(command: str) -> bool:
    """Whether `command` is `smsbridge <subcommand> [options]` that the CLI accepts."""
    argv = shlex.split(command)
    if not argv or argv[0] != "smsbridge":
        return False
    try:
        build_parser().parse_args(argv[1:])
    except SystemExit:
        return False
    return True


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs: comments dropped, backslash continuations joined."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1].strip() + " "
            continue
        keyword, _, arguments = (pending + line).partition(" ")
        instructions.append((keyword.upper(), arguments.strip()))
        pending = ""
    assert not pending, "the Dockerfile ends inside a continued line"
    return instructions


def app_json() -> dict[str, Any]:
    manifest: dict[str, Any] = json.loads((ROOT / "app.json").read_text())
    return manifest


def render_yaml() -> dict[str, Any]:
    blueprint: dict[str, Any] = yaml.safe_load((ROOT / "render.yaml").read_text())
    return blueprint


def procfile() -> dict[str, str]:
    lines = (ROOT / "Procfile").read_text().splitlines()
    return dict(
        (kind.strip(), command.strip())
        for kind, _, command in (line.partition(":") for line in lines if line.strip())
    )


def test_the_command_check_accepts_real_commands_and_refuses_others() -> None:
    assert is_smsbridge_command("smsbridge serve --no-worker")
    assert is_smsbridge_command("smsbridge doctor --config config/bridge.yaml")
    assert not is_smsbridge_command("smsbridge serv")
    assert not is_smsbridge_command("smsbridge serve --workers 2")
    assert not is_smsbridge_command("python -m bridge serve")


def test_settings_lists_every_variable_it_reads() -> None:
    source = Path(settings_module.__file__).read_text()
    reads = r"""(?:env\.get\(|secret\(|_(?:number|positive)\(\s*env,)\s*"([A-Z][A-Z0-9_]*)\""""
    read = set(re.findall(reads, source))
    # The simple variables that build a config are read together, by their tuple.
    assert read | set(settings_module.ENVIRONMENT_CONFIG) == set(settings_module.VARIABLES)


def test_app_json_has_heroku_s_shape() -> None:
    manifest = app_json()
    assert set(manifest) <= APP_JSON_KEYS
    assert len(manifest["name"]) <= 30 and len(manifest["description"]) <= 140
    for name, variable in manifest["env"].items():
        assert isinstance(variable, dict) and set(variable) <= APP_JSON_ENV_KEYS, name
        assert variable["description"].strip(), f"{name} has no description"
        assert isinstance(variable["required"], bool), f"{name} does not say if it is required"
        assert variable.get("generator", "secret") == "secret", name
        assert isinstance(variable.get("value", ""), str), name


def test_app_json_describes_exactly_the_variables_the_bridge_reads() -> None:
    assert set(app_json()["env"]) == bridge_variables()


def test_app_json_generates_the_webhook_token_and_brings_postgresql() -> None:
    manifest = app_json()
    assert manifest["env"]["SMSTOOLS_WEBHOOK_TOKEN"]["generator"] == "secret"
    plans = [addon["plan"] if isinstance(addon, dict) else addon for addon in manifest["addons"]]
    assert any(plan.startswith("heroku-postgresql") for plan in plans)


def test_app_json_runs_a_web_and_a_worker_from_the_procfile() -> None:
    formation = app_json()["formation"]
    assert set(formation) == {"web", "worker"}
    assert set(formation) <= set(procfile())
    assert all(process["quantity"] >= 1 for process in formation.values())
    # With a worker process, the web process leaves delivery to it.
    assert app_json()["env"]["BRIDGE_WORKER"]["value"] == "0"


def test_every_procfile_command_is_a_smsbridge_command() -> None:
    processes = procfile()
    assert {"release", "web", "worker"} <= set(processes)
    for kind, command in processes.items():
        assert is_smsbridge_command(command), f"Procfile {kind}: {command}"


def test_render_yaml_has_a_web_service_a_worker_and_a_database() -> None:
    blueprint = render_yaml()
    services = {service["type"]: service for service in blueprint["services"]}
    assert set(services) == {"web", "worker"}
    databases = {database["name"] for database in blueprint["databases"]}
    groups = {group["name"]: group for group in blueprint.get("envVarGroups", [])}
    for service in blueprint["services"]:
        assert (ROOT / shlex.split(service["buildCommand"])[-1]).is_file()  # requirements.txt
        sources = service["envVars"]
        linked = [v["fromDatabase"] for v in sources if "fromDatabase" in v]
        assert [link["name"] for link in linked] == [next(iter(databases))]
        assert all(v["fromGroup"] in groups for v in sources if "fromGroup" in v)
    assert services["web"]["healthCheckPath"] == "/healthz"


def test_every_render_command_is_a_smsbridge_command() -> None:
    for service in render_yaml()["services"]:
        for field in ("startCommand", "preDeployCommand"):
            if field in service:
                command = service[field]
                assert is_smsbridge_command(command), f"{service['name']} {field}: {command}"


def test_render_yaml_sets_only_variables_the_bridge_reads() -> None:
    blueprint = render_yaml()
    entries = [v for service in blueprint["services"] for v in service["envVars"]]
    entries += [v for group in blueprint.get("envVarGroups", []) for v in group["envVars"]]
    keys = {entry["key"] for entry in entries if "key" in entry}
    assert keys <= bridge_variables()
    token = next(entry for entry in entries if entry.get("key") == "SMSTOOLS_WEBHOOK_TOKEN")
    assert token.get("generateValue") is True


def test_the_dockerfile_runs_smsbridge_serve_as_a_non_root_user_with_a_healthcheck() -> None:
    instructions = dockerfile_instructions((ROOT / "Dockerfile").read_text())
    keywords = [keyword for keyword, _ in instructions]
    known = {"FROM", "ENV", "WORKDIR", "COPY", "RUN", "VOLUME", "EXPOSE", "USER"}
    assert set(keywords) <= known | {"HEALTHCHECK", "CMD"}
    arguments = dict(instructions)  # the last of each instruction counts, as in Docker

    python = (ROOT / ".python-version").read_text().strip()
    assert arguments["FROM"] == f"python:{python}-slim"
    assert arguments["USER"] not in ("root", "0")
    assert keywords.index("USER") > max(i for i, k in enumerate(keywords) if k == "RUN")

    command = json.loads(arguments["CMD"])
    assert is_smsbridge_command(shlex.join(command))

    options, _, check = arguments["HEALTHCHECK"].partition(" CMD ")
    probe = json.loads(check)
    assert probe[0] == "python" and "/healthz" in probe[-1] and "curl" not in check
    assert all(option.startswith("--") for option in options.split())

    for keyword, argument in instructions:
        if keyword == "COPY":
            *sources, _target = argument.split()
            assert all((ROOT / source).exists() for source in sources), argument


def test_the_healthcheck_path_is_the_bridge_s() -> None:
    app = create_app(Settings.from_env({}), load(None, {}))
    assert "/healthz" in [route.path for route in app.routes if isinstance(route, Route)]


def test_the_pinned_python_is_one_the_project_supports() -> None:
    pinned = (ROOT / ".python-version").read_text().strip()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    minimum = project["requires-python"].removeprefix(">=")
    as_tuple = [tuple(int(part) for part in v.split(".")[:2]) for v in (pinned, minimum)]
    assert as_tuple[0] >= as_tuple[1]


@pytest.mark.parametrize("line", ["-c constraints.txt", "."])
def test_requirements_txt_installs_the_bridge_with_the_pinned_versions(line: str) -> None:
    assert line in (ROOT / "requirements.txt").read_text().splitlines()


def test_a_deploy_from_the_buttons_needs_no_config_file() -> None:
    env = app_json()["env"]
    assert "value" not in env["BRIDGE_CONFIG"]  # no file a fork may not have
    for name in ("SLACK_CHANNEL", "TELEGRAM_CHAT_ID", "BRIDGE_CONFIG_YAML"):
        assert env[name]["required"] is False, name
    groups = [v for group in render_yaml().get("envVarGroups", []) for v in group["envVars"]]
    keys = {entry["key"] for entry in groups}
    assert {"SLACK_CHANNEL", "TELEGRAM_CHAT_ID"} <= keys and "BRIDGE_CONFIG" not in keys


def test_the_readme_buttons_deploy_the_repository_they_are_clicked_in() -> None:
    readme = (ROOT / "README.md").read_text()
    buttons = re.findall(r"\]\((https://(?:www\.heroku\.com|render\.com)/deploy[^)]*)\)", readme)
    assert len(buttons) == 2
    # Without template= / repo=, each platform deploys the repository the click came from.
    assert buttons == ["https://www.heroku.com/deploy", "https://render.com/deploy"]
    assert "YOUR-ORG" not in readme
