"""The package as installed (``nattk/<folder>``): rooms with one job, imports that only go down.

Read from ``pyproject.toml``'s package table and the sources (nothing is imported), so a
new module or import that breaks a rule fails here, naming it.
"""

from __future__ import annotations

import ast
import sys
from collections import defaultdict
from pathlib import Path

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - CI runs 3.11
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[1]
SETUP = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
PACKAGES: list[str] = SETUP["packages"]
#: At most this many modules at the top level of ``nattk/`` (entry points' logic).
MAX_TOP_LEVEL = 15


def _modules() -> dict[str, Path]:
    modules = {}
    for package in PACKAGES:
        folder = ROOT / SETUP["package-dir"].get(package, package.replace(".", "/"))
        for path in sorted(folder.glob("*.py")):
            modules[package if path.stem == "__init__" else f"{package}.{path.stem}"] = path
    return modules


MODULES = _modules()


def _package_of(module: str) -> str:
    return max((p for p in PACKAGES if module == p or module.startswith(p + ".")), key=len)


def _targets(module: str, node: ast.ImportFrom) -> list[str]:
    """The modules of this package that a ``from ... import`` at module level loads."""
    if node.level:
        base = module if MODULES[module].stem == "__init__" else module.rsplit(".", 1)[0]
        base = ".".join(base.split(".")[: len(base.split(".")) - node.level + 1])
        source = base + ("." + node.module if node.module else "")
    else:
        source = node.module or ""
    submodules = [f"{source}.{a.name}" for a in node.names if f"{source}.{a.name}" in MODULES]
    return submodules if len(submodules) == len(node.names) else [source, *submodules]


def _edges() -> dict[str, set[str]]:
    """Module-level imports between modules of the package (lazy ones inside functions excluded)."""
    edges: dict[str, set[str]] = defaultdict(set)
    for module, path in MODULES.items():
        for statement in ast.parse(path.read_text()).body:
            for node in ast.walk(statement):
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    break
                if isinstance(node, ast.Import):
                    found = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom):
                    found = _targets(module, node)
                else:
                    continue
                edges[module] |= {t for t in found if t in MODULES and t != module}
    return edges


EDGES = _edges()


def test_nattk_holds_few_top_level_modules():
    top = sorted(p.name for p in (ROOT / "nattk").glob("*.py"))
    assert len(top) <= MAX_TOP_LEVEL, f"{len(top)} modules at the top of nattk/: {top}"


def test_no_import_runs_back_up():
    """A package never imports a module of a package above it (e.g. weights -> backbones)."""
    upward = [
        f"{a} imports {b}"
        for a, targets in EDGES.items()
        for b in targets
        if _package_of(b) != _package_of(a) and _package_of(a).startswith(_package_of(b) + ".")
    ]
    assert not upward, "\n".join(upward)


def test_the_package_graph_has_no_circles():
    graph: dict[str, set[str]] = defaultdict(set)
    for a, targets in EDGES.items():
        for b in targets:
            if _package_of(a) != _package_of(b) and not b.startswith(_package_of(a) + "."):
                graph[_package_of(a)].add(_package_of(b))
    state: dict[str, int] = {}

    def visit(package: str, path: list[str]) -> None:
        state[package] = 1
        for nxt in sorted(graph[package]):
            assert state.get(nxt) != 1, "import circle: " + " -> ".join([*path, package, nxt])
            if nxt not in state:
                visit(nxt, [*path, package])
        state[package] = 2

    for package in PACKAGES:
        if package not in state:
            visit(package, [])


def test_the_rules_see_real_imports():
    """Negative control: the graph holds the imports everyone knows are there."""
    assert "nattk.backbones.weights.layouts" in EDGES["nattk.backbones.weights.load"]
    assert "nattk.openmmlab" in EDGES["nattk.detection.backbones"]
    assert _package_of("nattk.backbones.weights.io") == "nattk.backbones.weights"
