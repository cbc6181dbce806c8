"""The package layout holds: no import circles, imports only along pipelines → coldstart → encoders → kg,
no calls into another package's underscore names, and functions that fit on one screen."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ["kg", "encoders", "coldstart", "pipelines"]  # each may import only those after it
MAX_LINES = 60
LONG_OK: set[tuple[str, str]] = set()  # nothing is exempt


def _modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for f in sorted((ROOT / pkg).rglob("*.py")):
            name = ".".join(f.relative_to(ROOT).with_suffix("").parts)
            out[name.removesuffix(".__init__")] = f
    return out


MODULES = _modules()


def _imports(name: str, path: Path) -> set[str]:
    """Our modules that ``name`` imports anywhere (module level or inside functions), but not under
    ``if TYPE_CHECKING:`` (annotations only, never run)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
            for n in ast.walk(node)}
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            roots = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            root = ".".join(base + ([node.module] if node.module else []))
            roots = [root] + [f"{root}.{a.name}" for a in node.names]
        else:
            continue
        for r in roots:
            while r and r not in MODULES:
                r = r.rpartition(".")[0]
            if r and r != name:
                found.add(r)
    return found


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def _package(module: str) -> str:
    return module.split(".")[0]


def test_imports_follow_the_package_direction():
    bad = [f"{a} imports {b}" for a, bs in GRAPH.items() for b in bs
           if PACKAGES.index(_package(b)) > PACKAGES.index(_package(a))]
    assert not bad, "imports against pipelines → coldstart → encoders → kg:\n" + "\n".join(bad)


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle among modules (excluding a package's ``__init__`` re-exports), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for m in sorted(graph.get(n, ())):
            if m in PACKAGES:  # importing a package's __init__ is how its public names are reached
                continue
            if state.get(m) == 1:
                return stack[stack.index(m):] + [m]
            if m not in state and (c := visit(m)):
                return c
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(graph):
        if n not in state and (c := visit(n)):
            return c
    return None


def test_no_import_circles():
    cycle = _cycle(GRAPH)
    assert cycle is None, "import circle: " + " → ".join(cycle)


def test_cycle_finder_finds_a_circle():
    assert _cycle({"a.x": {"a.y"}, "a.y": {"a.z"}, "a.z": {"a.x"}}) == ["a.x", "a.y", "a.z", "a.x"]
    assert _cycle({"a.x": {"a.y"}, "a.y": set()}) is None


def _private_names(tree: ast.AST) -> set[str]:
    """Underscore names a module defines: functions, methods, classes, ``self._x`` attributes."""
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            out.add(node.name)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            out.add(node.attr)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            out.add(node.id)
    return {n for n in out if n.startswith("_") and not n.startswith("__")}


TREES = {name: ast.parse(path.read_text(encoding="utf-8")) for name, path in MODULES.items()}
PRIVATE = {pkg: set().union(*(_private_names(t) for n, t in TREES.items() if _package(n) == pkg)) for pkg in PACKAGES}


def _foreign_private_uses(module: str) -> list[str]:
    """Imports of another package's ``_name`` and ``obj._name`` uses (receiver not self/cls) of a name
    only another package defines."""
    own, out = _package(module), []
    rel = MODULES[module].relative_to(ROOT)
    for node in ast.walk(TREES[module]):
        if isinstance(node, ast.ImportFrom) and node.module and not node.level and _package(node.module) != own:
            out += [f"{rel}:{node.lineno} imports {node.module}.{a.name}" for a in node.names
                    if a.name.startswith("_") and _package(node.module) in PACKAGES]
        if (isinstance(node, ast.Attribute) and node.attr in set().union(*(PRIVATE[p] for p in PACKAGES if p != own))
                and node.attr not in PRIVATE[own] and ast.unparse(node.value) not in ("self", "cls")):
            out.append(f"{rel}:{node.lineno} uses {ast.unparse(node)}")
    return out


def test_no_calls_into_another_packages_private_names():
    bad = [u for name in MODULES for u in _foreign_private_uses(name)]
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("pkg", PACKAGES)
def test_functions_fit_on_one_screen(pkg):
    long = []
    for name, path in MODULES.items():
        if _package(name) != pkg:
            continue
        rel = str(path.relative_to(ROOT))
        for node in ast.walk(TREES[name]):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and (rel, node.name) not in LONG_OK:
                n = node.end_lineno - node.lineno + 1
                if n > MAX_LINES:
                    long.append(f"{rel}:{node.lineno} {node.name} ({n} lines)")
    assert not long, f"functions over {MAX_LINES} lines:\n" + "\n".join(long)
