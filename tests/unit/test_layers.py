"""The house's import rules (docs/architecture.md, "Layers"), read from the source with ``ast``:
every import inside ``chalicelib/`` (lazy ones in functions included) points down the layers,
the two dialects never import each other, and no modules import each other in a circle.

A failure names the offending import, so whoever added it sees which rule it breaks.
"""
from __future__ import annotations

import ast
import pathlib
import sys
from typing import Dict, List, Set, Tuple

from tests.conftest import ROOT

PACKAGE = ROOT / "chalicelib"

#: lowest first; a module may import its own layer or a lower one, never a higher one. The
#: first prefix that matches a module's dotted name (without ``chalicelib.``) gives its layer.
LAYERS: List[Tuple[str, Tuple[str, ...]]] = [
    ("base", ("settings", "webhook_settings", "addresses", "errors", "jsonutil", "logtext", "aws",
              "observability")),
    ("rules", ("auth", "channels", "protocol")),
    ("registry", ("registry",)),
    ("delivery", ("delivery",)),
    ("dialects", ("dialects",)),
    ("doors", ("doors",)),
]
#: groups of one layer that must not import each other
PEERS = (("dialects.native", "dialects.pusher"),)


def module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> Dict[str, pathlib.Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def _resolve(found: Dict[str, pathlib.Path], name: str) -> str:
    """The module a dotted import name lands in (``a.b.C`` -> ``a.b`` when ``C`` is a name)."""
    while name not in found and "." in name:
        name = name.rsplit(".", 1)[0]
    return name


def imports_of(name: str, path: pathlib.Path,
               found: Dict[str, pathlib.Path]) -> List[Tuple[str, int]]:
    """``(imported chalicelib module, line)`` for every import in a module, lazy ones too."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    result = []
    for node in ast.walk(tree):
        targets: List[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[:len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{alias.name}" for alias in node.names]
        for target in targets:
            if target == "chalicelib" or target.startswith("chalicelib."):
                resolved = _resolve(found, target)
                if resolved != name and resolved != "chalicelib":
                    result.append((resolved, node.lineno))
    return result


def layer_of(name: str) -> int:
    short = name[len("chalicelib."):] if name.startswith("chalicelib.") else ""
    for index, (_, prefixes) in enumerate(LAYERS):
        if any(short == prefix or short.startswith(prefix + ".") for prefix in prefixes):
            return index
    raise AssertionError(f"{name} is in no layer: add it to LAYERS in {__file__}")


def graph() -> Dict[str, Set[str]]:
    found = modules()
    return {name: {target for target, _ in imports_of(name, path, found)}
            for name, path in found.items()}


def violations() -> List[str]:
    found = modules()
    problems = []
    for name, path in found.items():
        if name == "chalicelib":
            continue
        mine = layer_of(name)
        for target, line in imports_of(name, path, found):
            theirs = layer_of(target)
            where = f"{path.relative_to(ROOT)}:{line} imports {target}"
            if theirs > mine:
                problems.append(f"{where}: layer {LAYERS[mine][0]} may not import layer "
                                f"{LAYERS[theirs][0]}")
            for group in PEERS:
                for a in group:
                    for b in group:
                        if a != b and name.startswith(f"chalicelib.{a}") \
                                and target.startswith(f"chalicelib.{b}"):
                            problems.append(f"{where}: the peers {a} and {b} may not import "
                                            "each other")
    return problems


def cycles(edges: Dict[str, Set[str]]) -> List[List[str]]:
    """Every strongly connected component of more than one module (Tarjan's algorithm)."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on_stack: Set[str] = set()
    found: List[List[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(edges.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def test_every_import_points_down_the_layers_and_peers_stay_apart():
    assert violations() == []


def test_no_modules_import_each_other_in_a_circle():
    assert cycles(graph()) == []


def test_every_module_of_chalicelib_has_a_layer():
    for name in modules():
        if name != "chalicelib":
            layer_of(name)


def test_no_room_is_over_800_lines_nor_a_registry_room_over_500():
    sizes = {name: len(path.read_text(encoding="utf-8").splitlines())
             for name, path in modules().items()}
    assert {name: n for name, n in sizes.items() if n > 800} == {}
    assert {name: n for name, n in sizes.items()
            if name.startswith("chalicelib.registry.") and n > 500} == {}


# --- the checks themselves catch what they are for -------------------------------------------

def test_a_lazy_upward_import_and_a_circle_are_found(tmp_path, monkeypatch):
    files = {
        "chalicelib/__init__.py": "",
        "chalicelib/registry/__init__.py": "",
        "chalicelib/registry/table.py": "def f():\n    from chalicelib.delivery import push\n",
        "chalicelib/delivery/__init__.py": "",
        "chalicelib/delivery/push.py": "from chalicelib.registry import table\n",
        "chalicelib/dialects/__init__.py": "",
        "chalicelib/dialects/native.py": "from chalicelib.dialects.pusher.socket import x\n",
        "chalicelib/dialects/pusher/__init__.py": "",
        "chalicelib/dialects/pusher/socket.py": "x = 1\n",
    }
    for relative, text in files.items():
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_text(text)
    this = sys.modules[__name__]
    monkeypatch.setattr(this, "ROOT", tmp_path)
    monkeypatch.setattr(this, "PACKAGE", tmp_path / "chalicelib")
    found = violations()
    assert any("chalicelib/registry/table.py:2 imports chalicelib.delivery.push" in p
               and "layer registry may not import layer delivery" in p for p in found)
    assert any("peers dialects.native and dialects.pusher" in p for p in found)
    assert cycles(graph()) == [["chalicelib.delivery.push", "chalicelib.registry.table"]]
