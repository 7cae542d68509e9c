"""The loop and HTTP parser the processes run on: the compiled ones by default, the pure-Python
ones where those are not installed, and one asked for by name only if it is installed."""

from __future__ import annotations

import asyncio
import tomllib
from pathlib import Path

import pytest

from bridge import runtime

ROOT = Path(__file__).parents[2]


def everything(_module: str) -> bool:
    return True


def nothing(_module: str) -> bool:
    return False


def test_auto_is_uvloop_and_httptools_when_installed() -> None:
    chosen = runtime.choose(present=everything)
    assert chosen == runtime.Runtime("uvloop", "httptools")
    assert chosen.describe() == "uvloop + httptools"


def test_auto_falls_back_to_asyncio_and_h11_where_they_are_not_installed() -> None:
    assert runtime.choose(present=nothing) == runtime.Runtime("asyncio", "h11")


def test_only_what_is_missing_falls_back() -> None:
    only_httptools = runtime.choose(present=lambda module: module == "httptools")
    assert only_httptools == runtime.Runtime("asyncio", "httptools")


def test_the_pure_python_ones_can_be_asked_for_whatever_is_installed() -> None:
    assert runtime.choose("asyncio", "h11", present=everything) == runtime.Runtime("asyncio", "h11")


@pytest.mark.parametrize(
    ("loop", "http", "message"),
    [
        ("uvloop", "auto", "--loop uvloop: uvloop is not installed (pip install uvloop)"),
        ("auto", "httptools", "--http httptools: httptools is not installed"),
        ("trio", "auto", "--loop trio: give one of auto, uvloop, asyncio"),
    ],
)
def test_one_asked_for_by_name_must_be_installed(loop: str, http: str, message: str) -> None:
    with pytest.raises(runtime.Unavailable, match=message.replace("(", r"\(").replace(")", r"\)")):
        runtime.choose(loop, http, present=nothing)


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
def test_run_runs_the_coroutine_on_the_loop_asked_for(loop: str) -> None:
    async def loop_module() -> str:
        return type(asyncio.get_running_loop()).__module__

    assert runtime.run(loop_module(), loop).split(".")[0] == loop


def test_a_fresh_install_has_uvloop_and_httptools_pinned_alike_in_both_files() -> None:
    assert runtime.choose() == runtime.Runtime("uvloop", "httptools")
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    constraints = (ROOT / "constraints.txt").read_text().splitlines()
    for name in ("uvloop", "httptools"):
        pinned = next(line for line in dependencies if line.startswith(f"{name}=="))
        assert pinned.split(";")[0].strip() in constraints
