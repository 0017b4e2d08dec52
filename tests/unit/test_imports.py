"""The package's modules import each other without a cycle.

An import counts whether it runs when the module loads or when a function first runs: a deferred import
that closes a cycle still makes the two modules one tangle that cannot be read, tested or moved apart.
Only imports under ``if TYPE_CHECKING:`` are left out, since they never run. An import counts for the
module it names, not for the packages above it (whose ``__init__`` runs first): a package that re-exports
its modules would otherwise tie every one of them to itself.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

import celeriac

PACKAGE = Path(celeriac.__file__).parent

#: Import edges (importer, imported) the check tolerates, each with the reason a cycle is needed there.
ALLOWED: frozenset[tuple[str, str]] = frozenset()


def module_names(root: Path, package: str) -> dict[str, Path]:
    """Every module under ``root`` by its dotted name (a package by its own name, for its ``__init__``)."""
    names: dict[str, Path] = {}
    for path in sorted(root.rglob("*.py")):
        parts = [package, *path.relative_to(root).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _runtime_nodes(tree: ast.AST) -> Iterator[ast.AST]:
    """Every node of ``tree`` that can run: the bodies of ``if TYPE_CHECKING:`` are skipped."""
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        stack.extend(ast.iter_child_nodes(node))


def imported_modules(name: str, path: Path, known: Iterable[str], package: str) -> set[str]:
    """The modules of ``package`` that module ``name`` (its source at ``path``) imports at run time.

    ``from pkg import sub`` counts as importing ``pkg.sub`` when that is a module; otherwise the import
    is of the deepest module the dotted name reaches.
    """
    modules = set(known)
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in _runtime_nodes(ast.parse(path.read_text(), str(path))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".") if is_package else name.split(".")[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base]) if base else ".".join(anchor)
            targets = [f"{base}.{alias.name}" for alias in node.names]
        for target in targets:
            if target != package and not target.startswith(package + "."):
                continue
            while target not in modules and "." in target:
                target = target.rsplit(".", 1)[0]
            if target in modules and target != name:
                found.add(target)
    return found


def import_graph(root: Path = PACKAGE, package: str = "celeriac") -> dict[str, set[str]]:
    """Each module of the package with the package's modules it imports at run time."""
    names = module_names(root, package)
    return {name: imported_modules(name, path, names, package) for name, path in names.items()}


def cycles(graph: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module, each sorted (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in graph.get(node, ()):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
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

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def _edges_within(graph: Mapping[str, Iterable[str]], component: list[str]) -> list[str]:
    members = set(component)
    return [f"{a} -> {b}" for a in component for b in sorted(graph[a]) if b in members]


def test_the_package_has_no_import_cycle() -> None:
    graph = {name: deps - {b for a, b in ALLOWED if a == name} for name, deps in import_graph().items()}
    tangles = cycles(graph)
    report = "\n\n".join(
        f"cycle of {len(c)} modules: {', '.join(c)}\n  " + "\n  ".join(_edges_within(graph, c))
        for c in tangles
    )
    assert not tangles, report


def test_every_allowed_edge_exists() -> None:
    graph = import_graph()
    stale = [edge for edge in ALLOWED if edge[1] not in graph.get(edge[0], ())]
    assert not stale, f"allowed edges no module makes any more: {stale}"


def test_the_graph_sees_deferred_relative_and_submodule_imports(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("from pkg.a import A\n")
    (pkg / "a.py").write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from pkg.b import B\n"
        "else:\n    import pkg.c\n"
        "class A:\n    def f(self):\n        from .sub import leaf\n"
    )
    (pkg / "b.py").write_text("from pkg import a\n")
    (pkg / "c.py").write_text("from pkg.sub.leaf import thing\nimport os\n")
    (pkg / "sub" / "__init__.py").write_text("from ..b import x\n")
    (pkg / "sub" / "leaf.py").write_text("from .. import a\n")
    graph = import_graph(pkg, "pkg")
    assert graph == {
        "pkg": {"pkg.a"},
        "pkg.a": {"pkg.c", "pkg.sub.leaf"},
        "pkg.b": {"pkg.a"},
        "pkg.c": {"pkg.sub.leaf"},
        "pkg.sub": {"pkg.b"},
        "pkg.sub.leaf": {"pkg.a"},
    }
    assert cycles(graph) == [["pkg.a", "pkg.c", "pkg.sub.leaf"]]


def test_the_cycle_finder_finds_every_cycle_and_no_other() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == []
    assert cycles({"a": {"b", "c"}, "b": {"d"}, "c": {"d"}, "d": set()}) == []
    assert cycles({"a": {"b"}, "b": {"a"}, "c": {"a", "d"}, "d": {"e"}, "e": {"d"}}) == [
        ["a", "b"],
        ["d", "e"],
    ]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "x": {"a"}}) == [["a", "b", "c"]]


def test_the_real_graph_is_not_empty() -> None:
    graph = import_graph()
    assert "celeriac.task" in graph["celeriac.app"]
    assert "celeriac.states" in graph["celeriac.task"]  # from celeriac import states
