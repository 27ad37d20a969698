"""The helper's folders are its layers, and imports point down only (parsed, never run).

kernel (namespaces, links, processes) is the ground; the firewall and the
tunnel drivers stand on it, side by side and apart; the engine on those; the
bus edge on the engine; main.py builds the whole. Client modules never
import the privileged side. Nothing in the package imports in a circle.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "appjail"
LAYERS = {"kernel": 1, "firewall": 2, "tunnels": 2, "engine": 3, "bus": 4, "main": 5}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in PACKAGE.rglob("*.py")}


def imports(path: Path) -> set[str]:
    """Every appjail module PATH imports, wherever the import stands (in a function too)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            submodules = {f"{base}.{alias.name}" for alias in node.names} & MODULES.keys()
            found |= submodules if len(submodules) == len(node.names) else {base, *submodules}
    return found & MODULES.keys()
GRAPH = {name: imports(path) - {name} for name, path in MODULES.items()}


def layer(name: str) -> int | None:
    parts = name.split(".")
    if parts[:2] != ["appjail", "helper"] or len(parts) < 3:
        return None
    return LAYERS.get(parts[2])


def test_the_helper_is_in_its_layer_folders():
    loose = [name for name in MODULES if name.startswith("appjail.helper.") and layer(name) is None]
    assert not loose, "every helper module lives in a layer folder (or is main)"


def test_the_helper_imports_point_down():
    upward = [(name, target) for name, targets in GRAPH.items() for target in targets
              if layer(name) is not None and layer(target) is not None
              and layer(target) >= layer(name) and target.split(".")[2] != name.split(".")[2]]
    assert upward == []


def test_client_modules_never_import_the_privileged_side():
    client = [name for name in MODULES if not name.startswith(("appjail.helper", "appjail.lab"))]
    assert [(name, target) for name in client for target in GRAPH[name] if target.startswith("appjail.helper")] == []


def test_no_module_imports_in_a_circle():
    def circle_from(start: str) -> list[str] | None:
        path, seen = [start], set()

        def walk(name: str) -> list[str] | None:
            for target in sorted(GRAPH[name]):
                if target == start:
                    return [*path, start]
                if target not in seen:
                    seen.add(target)
                    path.append(target)
                    if found := walk(target):
                        return found
                    path.pop()
            return None
        return walk(start)
    circles = [found for name in sorted(GRAPH) if (found := circle_from(name))]
    assert circles == []
