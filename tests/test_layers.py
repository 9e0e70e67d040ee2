"""The import rule of ``src/tbscore``: imports only go downward, no cycles.

Every module is parsed with :mod:`ast` (nothing is imported), every ``import`` and
``from ... import`` is collected -- at module level, inside functions, and under
``if TYPE_CHECKING:`` -- and resolved to a module of the package. Then:

* each module belongs to a layer (:data:`LAYERS`, lowest first); a module may import
  modules of a lower layer, or modules of its own group (``tbscore.core.*`` among
  themselves). Importing a higher layer, or a *different* group of the same layer
  (``batch`` <-> ``export``), fails; what both need goes one layer down;
* no cycle between modules, counting runtime imports (module level and function level;
  ``if TYPE_CHECKING:`` imports are for type checkers only and are left out of the
  cycle check, but they obey the layer rule too);
* ``argparse`` is imported in ``tbscore.cli`` only;
* ``tbscore.sim`` (phantoms, validation models) is imported by ``tbscore.sim`` and the
  ``phantom`` command only, never by product code;
* ``tbscore`` itself (the lazy facade, ``tbscore/__init__.py``) is imported by no module
  of the package.

To add a package (``net/``, ``review/``, ...), put its name in :data:`LAYERS`.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "tbscore"

#: Layers, lowest first. Each entry is a tuple of groups (a module or a package: the
#: group of ``tbscore.core.roi`` is ``tbscore.core``). Extend here.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("tbscore.errors", "tbscore._version"),
    ("tbscore.log",),  # the library logger and audit lines (stdlib only)
    ("tbscore.core",),
    ("tbscore.io",),
    ("tbscore.clinical",),
    ("tbscore.render",),
    ("tbscore.api",),
    ("tbscore.signing",),  # the one signing path (sign, review)
    ("tbscore.calibrate",),
    ("tbscore.sim",),
    ("tbscore.batch", "tbscore.export"),
    ("tbscore.cohort",),  # reads batch outputs
    ("tbscore.net", "tbscore.review"),
    ("tbscore.cli",),
    ("tbscore", "tbscore.__main__"),  # the lazy facade and ``python -m tbscore``
)

#: Modules allowed to import ``tbscore.sim`` besides ``tbscore.sim`` itself.
SIM_USERS = ("tbscore.cli.phantom",)


@dataclass(frozen=True)
class Import:
    """One import statement found in a module."""

    importer: str
    target: str  # a module of the package, or a top-level external name
    line: int
    type_checking: bool


def module_name(path: Path) -> str:
    """Dotted module name of a file under ``src/`` (``__init__`` -> the package)."""
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def all_modules() -> dict[str, Path]:
    """Every module of the package: dotted name -> file."""
    return {module_name(p): p for p in sorted((SRC / PACKAGE).rglob("*.py"))}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _resolve(name: str, modules: dict[str, Path]) -> str:
    """The longest prefix of ``name`` that is a module of the package (else the root)."""
    parts = name.split(".")
    for n in range(len(parts), 0, -1):
        candidate = ".".join(parts[:n])
        if candidate in modules:
            return candidate
    return parts[0]


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> list[Import]:
    """Every import in one module, resolved to package modules where they are ones."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    is_package = path.name == "__init__.py"
    found: list[Import] = []

    def visit(node: ast.AST, type_checking: bool) -> None:
        for child in ast.iter_child_nodes(node):
            tc = type_checking
            if isinstance(child, ast.If) and _is_type_checking(child.test):
                for sub in child.body:
                    visit_stmt(sub, True)
                for sub in child.orelse:
                    visit_stmt(sub, tc)
                continue
            visit_stmt(child, tc)

    def visit_stmt(node: ast.AST, type_checking: bool) -> None:
        if isinstance(node, ast.Import):
            for alias in node.names:
                target = _resolve(alias.name, modules)
                found.append(Import(name, target, node.lineno, type_checking))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            for alias in node.names:
                # ``from tbscore.core import roi`` imports the submodule
                target = _resolve(f"{mod}.{alias.name}", modules)
                found.append(Import(name, target, node.lineno, type_checking))
        else:
            visit(node, type_checking)

    visit(tree, False)
    return found


def group_of(module: str) -> tuple[int, str]:
    """(layer index, group) of a package module."""
    best: tuple[int, str] | None = None
    for rank, groups in enumerate(LAYERS):
        for group in groups:
            if module == group or (group != PACKAGE and module.startswith(group + ".")):
                if best is None or len(group) > len(best[1]):
                    best = (rank, group)
    if best is None:
        raise AssertionError(f"{module} is in no layer: add its package to LAYERS")
    return best


@pytest.fixture(scope="module")
def graph() -> list[Import]:
    modules = all_modules()
    out: list[Import] = []
    for name, path in modules.items():
        out.extend(imports_of(name, path, modules))
    return out


def _internal(imports: list[Import]) -> list[Import]:
    return [i for i in imports if i.target == PACKAGE or i.target.startswith(PACKAGE + ".")]


def test_every_module_has_a_layer() -> None:
    for name in all_modules():
        group_of(name)


def test_imports_go_downward(graph: list[Import]) -> None:
    bad = set()
    for imp in _internal(graph):
        src_rank, src_group = group_of(imp.importer)
        dst_rank, dst_group = group_of(imp.target)
        if src_group == dst_group:
            continue
        if dst_rank >= src_rank:
            bad.add(f"{imp.importer}:{imp.line} imports {imp.target}")
    assert not bad, "upward or sideways imports:\n" + "\n".join(sorted(bad))


def find_cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    counter = [0]

    def strong(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1 or v in edges.get(v, ()):
                cycles.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            strong(v)
    return cycles


def test_find_cycles_finds_a_cycle() -> None:
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles(graph: list[Import]) -> None:
    edges: dict[str, set[str]] = {}
    for imp in _internal(graph):
        if not imp.type_checking and imp.target != imp.importer:
            edges.setdefault(imp.importer, set()).add(imp.target)
    assert find_cycles(edges) == []


def test_argparse_only_in_cli(graph: list[Import]) -> None:
    bad = [
        f"{i.importer}:{i.line}"
        for i in graph
        if i.target == "argparse" and not i.importer.startswith("tbscore.cli")
    ]
    assert not bad, "argparse outside tbscore.cli: " + ", ".join(bad)


def test_sim_not_imported_by_product_code(graph: list[Import]) -> None:
    bad = [
        f"{i.importer}:{i.line}"
        for i in _internal(graph)
        if (i.target == "tbscore.sim" or i.target.startswith("tbscore.sim."))
        and not i.importer.startswith("tbscore.sim")
        and i.importer not in SIM_USERS
    ]
    assert not bad, "tbscore.sim imported by product code: " + ", ".join(bad)


def test_layer_rule_detects_violations(tmp_path: Path) -> None:
    """The checker itself: an upward import, a sideways import and a cycle are found."""
    modules = {
        "tbscore.core.a": tmp_path / "a.py",
        "tbscore.io.b": tmp_path / "b.py",
        "tbscore.batch.c": tmp_path / "c.py",
        "tbscore.export.d": tmp_path / "d.py",
    }
    modules["tbscore.core.a"].write_text("def f():\n    from tbscore.io.b import x\n")
    modules["tbscore.io.b"].write_text("from tbscore.core import a\n")
    modules["tbscore.batch.c"].write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import tbscore.export.d\n"
    )
    modules["tbscore.export.d"].write_text("")
    found = {n: imports_of(n, p, modules) for n, p in modules.items()}
    assert [(i.target, i.type_checking) for i in found["tbscore.core.a"]] == [
        ("tbscore.io.b", False)
    ]
    assert [i.target for i in found["tbscore.io.b"]] == ["tbscore.core.a"]
    assert [(i.target, i.type_checking) for i in found["tbscore.batch.c"]] == [
        ("typing", False),
        ("tbscore.export.d", True),
    ]
    assert group_of("tbscore.io.b")[0] > group_of("tbscore.core.a")[0]
    assert group_of("tbscore.batch.c")[0] == group_of("tbscore.export.d")[0]
    edges = {"tbscore.core.a": {"tbscore.io.b"}, "tbscore.io.b": {"tbscore.core.a"}}
    assert find_cycles(edges) == [["tbscore.core.a", "tbscore.io.b"]]


def test_relative_imports_resolve(tmp_path: Path) -> None:
    modules = {
        "tbscore.core": tmp_path / "__init__.py",
        "tbscore.core.a": tmp_path / "a.py",
        "tbscore.core.b": tmp_path / "b.py",
    }
    modules["tbscore.core"].write_text("from . import a\nfrom .b import y\n")
    modules["tbscore.core.a"].write_text("from .b import y\nfrom .. import errors\n")
    modules["tbscore.core.b"].write_text("")
    assert [i.target for i in imports_of("tbscore.core", modules["tbscore.core"], modules)] == [
        "tbscore.core.a",
        "tbscore.core.b",
    ]
    got = [i.target for i in imports_of("tbscore.core.a", modules["tbscore.core.a"], modules)]
    assert got == ["tbscore.core.b", "tbscore"]
