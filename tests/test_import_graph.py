"""The package layering, checked by parsing every module with ``ast`` (no imports run).

Layers, bottom to top: ``pretrain/`` (config, models, harness, sampling) and ``data_pipeline/``;
then ``analysis/``; then ``slurm/`` (orchestration) and ``bench/``. A lower layer never
imports a higher one, and no two files import each other, directly or through a chain.
Imports inside functions count as well (they run too); ``if TYPE_CHECKING:`` blocks do not.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("pretrain", "data_pipeline", "analysis", "slurm", "bench")
LOWER = ("pretrain", "data_pipeline")
UPPER = ("slurm", "analysis", "bench")


def module_files() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for path in (ROOT / pkg).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            out[name] = path
    return out


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imported_names(tree: ast.AST, own: str, is_package: bool) -> list[str]:
    """Dotted names a module imports (``from a import b`` gives ``a.b`` and ``a``), relative ones resolved."""
    names: list[str] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            names.extend(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                pkg = own.split(".") if is_package else own.split(".")[:-1]
                pkg = pkg[:len(pkg) - (node.level - 1)]
                base = ".".join(pkg + ([base] if base else []))
            names.extend(f"{base}.{a.name}" for a in node.names)
            names.append(base)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return names


def import_graph() -> dict[str, set[str]]:
    """Module -> the project modules it imports (the most specific existing module of each name)."""
    files = module_files()
    graph: dict[str, set[str]] = {}
    for mod, path in files.items():
        deps = set()
        for name in imported_names(ast.parse(path.read_text()), mod, path.name == "__init__.py"):
            if name.split(".")[0] not in PACKAGES:
                continue
            target = name
            while target and target not in files:
                target = target.rpartition(".")[0]
            if target and target != mod:
                deps.add(target)
        graph[mod] = deps
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path ``[a, b, ..., a]``, or None (iterative DFS, three colours)."""
    colour = {m: 0 for m in graph}
    for root in sorted(graph):
        if colour[root]:
            continue
        stack: list[tuple[str, list[str]]] = [(root, sorted(graph[root]))]
        path = [root]
        colour[root] = 1
        while stack:
            node, todo = stack[-1]
            if not todo:
                colour[node] = 2
                stack.pop()
                path.pop()
                continue
            nxt = todo.pop()
            if colour.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if colour.get(nxt) == 0:
                colour[nxt] = 1
                path.append(nxt)
                stack.append((nxt, sorted(graph[nxt])))
    return None


def test_the_cycle_finder_finds_a_planted_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_relative_and_function_level_imports_are_seen() -> None:
    tree = ast.parse("from . import x\ndef f():\n    from .y import z\nif TYPE_CHECKING:\n    import w\n")
    names = imported_names(tree, "pkg.mod", is_package=False)
    assert "pkg.x" in names and "pkg.y.z" in names and "w" not in names


def test_no_module_is_part_of_an_import_cycle() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


@pytest.mark.parametrize("lower", LOWER)
def test_lower_layers_never_import_orchestration_or_analysis(lower: str) -> None:
    bad = sorted(f"{mod} imports {dep}" for mod, deps in import_graph().items() if mod.split(".")[0] == lower
                 for dep in deps if dep.split(".")[0] in UPPER)
    assert not bad, "\n".join(bad)


def test_the_config_package_imports_no_component() -> None:
    bad = sorted(f"{mod} imports {dep}" for mod, deps in import_graph().items() if mod.startswith("pretrain.config")
                 for dep in deps if not (dep.startswith("pretrain.config") or dep == "pretrain.sizes"))
    assert not bad, "\n".join(bad)
