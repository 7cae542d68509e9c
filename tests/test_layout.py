"""The layout shows the data flow: planning and delivering share leaves, not each other."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import bridge

PACKAGE = Path(bridge.__file__).parent


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


def test_the_bridge_modules_import_each_other_without_a_circle() -> None:
    modules = {_module_name(path): path for path in PACKAGE.rglob("*.py")}
    graph = {
        name: {other for other in _imports(path) if other in modules and other != name}
        for name, path in modules.items()
    }
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


def test_the_webhook_path_loads_no_chat_render_or_delivery_code() -> None:
    loaded = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, bridge.webhook; print('\\n'.join(m for m in sys.modules "
            "if m.startswith('bridge')))",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert "bridge.ingest" in loaded
    delivery_side = ("bridge.chat", "bridge.render", "bridge.threads", "bridge.deliveries")
    assert [module for module in loaded if module.startswith(delivery_side)] == []
