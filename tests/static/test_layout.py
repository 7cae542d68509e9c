"""The layout shows the data flow, and the arrows between its stages point one way.

The rule, by package:
- `http` (the edges) hands requests to `intake`; neither ever imports `delivery` or `chat`:
  nothing on the webhook path talks to a chat platform.
- `delivery` may use `intake` (a delivered job can plan follow-ups) and `chat`.
- `chat` and `smstools` are adapters: they import only the top-level leaves.
- `store` holds the only SQL and imports only the top-level leaves.
- `ops` (doctor, credit, retention, erasure, readiness, scrape) is imported only by `app`
  and `cli`, which assemble everything.
- The top-level leaves (`settings`, `config`, `jobs`, ...) import no stage but `smstools`,
  `store` and `chat` for their types.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import bridge

PACKAGE = Path(bridge.__file__).parent
ASSEMBLY = {"bridge.app", "bridge.cli", "bridge.__main__"}
LEAF_PACKAGES = {"smstools", "store", "chat"}
# What each stage may import besides the top-level leaves and itself.
MAY_IMPORT: dict[str, set[str]] = {
    "http": {"intake", "smstools", "store"},
    "intake": {"smstools", "store"},
    "delivery": {"intake", "chat", "smstools", "store"},
    "chat": set(),
    "smstools": set(),
    "store": set(),
    "ops": {"http", "intake", "delivery", "chat", "smstools", "store"},
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """The bridge modules `path` imports at module level, type-only imports included: a
    circle of types is still a missing leaf."""
    tree = ast.parse(path.read_text())
    package = _module_name(path).rsplit(".", 1)[0] if path.name != "__init__.py" else ""
    found: set[str] = set()
    top = [*tree.body, *(n for s in tree.body if isinstance(s, ast.If) for n in s.body)]
    for node in top:  # imports inside functions are deliberate, and none are used
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] + (f".{base}" if base else "")
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return {name for name in found if name.startswith("bridge")}


def _graph() -> dict[str, set[str]]:
    modules = {_module_name(path): path for path in PACKAGE.rglob("*.py")}
    return {
        name: {other for other in _imports(path) if other in modules and other != name}
        for name, path in modules.items()
    }


def _stage(module: str) -> str | None:
    """`bridge.intake.ingest` → `intake`; a top-level module has no stage."""
    parts = module.split(".")
    return parts[1] if len(parts) > 2 else None


def test_the_bridge_modules_import_each_other_without_a_circle() -> None:
    graph = _graph()
    visiting: list[str] = []
    done: set[str] = set()

    def visit(name: str) -> None:
        if name in done:
            return
        assert name not in visiting, "import circle: " + " → ".join([*visiting, name])
        visiting.append(name)
        for other in sorted(graph[name]):
            visit(other)
        visiting.pop()
        done.add(name)

    for name in sorted(graph):
        visit(name)


def broken_arrows(graph: dict[str, set[str]]) -> list[str]:
    """Every import that goes against the layout's rule, as `importer → imported`."""
    broken = []
    for importer, imported in sorted(graph.items()):
        if importer in ASSEMBLY:
            continue
        stage = _stage(importer)
        for other in sorted(imported):
            target = _stage(other)
            if target is None or target == stage:
                continue  # the top-level leaves, and a stage's own modules
            allowed = LEAF_PACKAGES if stage is None else MAY_IMPORT[stage]
            if target not in allowed:
                broken.append(f"{importer} → {other}")
    return broken


def test_the_stages_import_each_other_only_as_the_rule_says() -> None:
    assert broken_arrows(_graph()) == []


def test_the_rule_catches_an_edge_that_imports_a_chat_adapter() -> None:
    graph = {"bridge.http.webhook": {"bridge.chat.slack"}, "bridge.ops.doctor": set()}
    graph["bridge.delivery.worker"] = {"bridge.ops.credit"}
    assert broken_arrows(graph) == [
        "bridge.delivery.worker → bridge.ops.credit",
        "bridge.http.webhook → bridge.chat.slack",
    ]


def test_every_stage_is_a_folder_with_the_rule_written_for_it() -> None:
    folders = {path.parent.name for path in PACKAGE.glob("*/__init__.py")}
    assert folders == set(MAY_IMPORT)


def test_the_webhook_path_loads_no_chat_render_or_delivery_code() -> None:
    loaded = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, bridge.http.webhook; print('\\n'.join(m for m in sys.modules "
            "if m.startswith('bridge')))",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert "bridge.intake.ingest" in loaded
    delivery_side = ("bridge.chat.", "bridge.delivery", "bridge.ops")
    facts_only = {"bridge.chat.limits"}  # the platforms' rates, which the config defaults to
    assert [m for m in loaded if m.startswith(delivery_side) and m not in facts_only] == []
