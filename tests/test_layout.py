"""The package's layout is its architecture: each subpackage imports only the layers below it,
and no module imports itself back through another."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from conftest import REPO

PACKAGE = REPO / "bbans"

# What each part may import, besides itself and bbans.errors (the package root holds only the
# version). io reads the model registry, which is pure data, to route images.
ALLOWED = {
    "coding": {"coding"},
    "models": {"models", "coding"},
    "io": {"io", "models.registry"},
    "training": {"training", "models", "coding", "io"},
    "archive": {"archive", "io", "models", "coding"},
    "bench": {"coding", "models", "io"},
    "cli": {"cli", "archive", "io", "models", "coding", "training", "bench"},
}


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports() -> dict[str, set[str]]:
    """bbans module -> the bbans modules it imports, anywhere in its body."""
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    out = {}
    for name, path in modules.items():
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {a.name for a in node.names if a.name.startswith("bbans")}
            elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("bbans"):
                for a in node.names:
                    sub = f"{node.module}.{a.name}"
                    found.add(sub if sub in modules else node.module)
        out[name] = {m for m in found if m != name}
    return out


def _part(module: str) -> str:
    return module.split(".")[1] if module.count(".") else ""


def test_no_module_imports_itself_back_through_another():
    graph = _imports()
    seen, stack, cycles = set(), [], []

    def visit(m):
        if m in stack:
            cycles.append(stack[stack.index(m):] + [m])
            return
        if m in seen:
            return
        seen.add(m)
        stack.append(m)
        for n in sorted(graph.get(m, ())):
            if n in graph:
                visit(n)
        stack.pop()

    for m in sorted(graph):
        visit(m)
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


@pytest.mark.parametrize("part", sorted(ALLOWED))
def test_each_subpackage_imports_only_the_layers_below_it(part):
    bad = []
    for module, imported in _imports().items():
        if _part(module) != part:
            continue
        for m in imported:
            target = m[len("bbans."):] if m.startswith("bbans.") else ""
            if target in ("", "errors") or any(target == a or target.startswith(a + ".") for a in ALLOWED[part]):
                continue
            bad.append(f"{module} imports {m}")
    assert not bad, bad


def test_every_subpackage_ships_in_the_wheel():
    """pyproject lists packages by name, and a wheel holds only those: `pip install .` (not -e)
    would otherwise install a bbans without its archive, cli or coding code."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    present = {_module_name(p.parent / "__init__.py") for p in PACKAGE.rglob("__init__.py")}
    assert present <= listed
