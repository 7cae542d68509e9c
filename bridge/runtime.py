"""What the long-running processes run on: the event loop, and for `serve` uvicorn's HTTP
parser. `auto` means the compiled ones (uvloop, httptools), which the project installs by
default, and the pure-Python ones (asyncio, h11) where they are not installed; one asked for
by name must be installed.
"""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

LOOPS = ("auto", "uvloop", "asyncio")  # compiled first: what `auto` prefers
PARSERS = ("auto", "httptools", "h11")

Result = TypeVar("Result")


class Unavailable(Exception):
    """A loop or parser asked for by name is not installed; the message says which."""


@dataclass(frozen=True)
class Runtime:
    loop: str  # "uvloop" | "asyncio"
    http: str  # "httptools" | "h11"

    def describe(self) -> str:
        return f"{self.loop} + {self.http}"


def installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def choose(
    loop: str = "auto", http: str = "auto", *, present: Callable[[str], bool] = installed
) -> Runtime:
    """The loop and parser to run. `auto` is the compiled one when `present`, else the
    pure-Python one; a name must be one of `LOOPS` / `PARSERS` and, if compiled, present."""
    return Runtime(_pick("loop", loop, LOOPS, present), _pick("http", http, PARSERS, present))


def _pick(kind: str, name: str, names: tuple[str, ...], present: Callable[[str], bool]) -> str:
    compiled, pure = names[1], names[2]
    if name == "auto":
        return compiled if present(compiled) else pure
    if name not in names:
        raise Unavailable(f"--{kind} {name}: give one of {', '.join(names)}")
    if name == compiled and not present(compiled):
        raise Unavailable(f"--{kind} {name}: {name} is not installed (pip install {name})")
    return name


def loop_factory(loop: str) -> Callable[[], asyncio.AbstractEventLoop]:
    """A new event loop of the kind `choose` returned."""
    if loop == "uvloop":
        import uvloop  # only when chosen: where it is not installed, asyncio serves

        return uvloop.new_event_loop
    return asyncio.new_event_loop


def run(main: Coroutine[Any, Any, Result], loop: str = "auto") -> Result:
    """`asyncio.run(main)` on the loop `choose(loop)` picks."""
    with asyncio.Runner(loop_factory=loop_factory(choose(loop).loop)) as runner:
        return runner.run(main)
