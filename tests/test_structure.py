"""The package's structure, read from its source with `ast` (issue 13, "Done when"): imports run
one way (no import circle among asyncflow's modules but `flow.cli()`'s lazy import of the CLI),
and no module reaches into another module's private names.

Every import counts as an edge: at module level, inside a function, under `TYPE_CHECKING`; a
function-level or type-only import hides a circle from Python but not from a reader. A private
name is one that starts with one underscore (dunders are public protocol); it may be used in the
module that defines it, and through `self` and `cls`. The checks run on the package and, first,
on small synthetic packages, so that a passing check is known to be able to fail.
"""

from __future__ import annotations

import ast
import functools
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncflow

PACKAGE = Path(asyncflow.__file__).resolve().parent

# (importer, imported): the only import circles allowed, each only inside a function body.
# `Flow.cli()` imports the CLI on first use, so that `import asyncflow` does not load argparse
# and the CLI's modules; the CLI takes the Flow it is given.
ALLOWED_LAZY = {("asyncflow._flow", "asyncflow._cli")}


# -- reading the package --------------------------------------------------------------------


@dataclass(frozen=True)
class Module:
    name: str  # dotted: asyncflow._flow
    path: Path
    tree: ast.Module
    is_package: bool


def modules(root: Path, package: str) -> dict[str, Module]:
    """Every module of the package in folder ``root``, by dotted name."""
    found = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        if is_package:
            parts.pop()
        name = ".".join([package, *parts])
        found[name] = Module(name, path, ast.parse(path.read_text(), str(path)), is_package)
    return found


@dataclass(frozen=True)
class Import:
    importer: str
    imported: str
    line: int
    in_function: bool


def _base(module: Module, level: int) -> str:
    """The package a relative import of ``level`` dots in ``module`` starts from."""
    parts = module.name.split(".")
    if not module.is_package:
        parts.pop()
    return ".".join(parts[: len(parts) - (level - 1)])


def _function_nodes(tree: ast.AST) -> set[int]:
    """The ids of the nodes inside a function body (or a lambda)."""
    inside = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            inside.update(id(n) for n in ast.walk(node) if n is not node)
    return inside


def imports(module: Module, known: dict[str, Module]) -> Iterator[Import]:
    """Each import of another module of the package in ``module``, wherever it is."""
    package = module.name.split(".")[0]
    in_function = _function_nodes(module.tree)
    for node in ast.walk(module.tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = _base(module, node.level)
                source = f"{base}.{node.module}" if node.module else base
            else:
                source = node.module or ""
            for alias in node.names:
                # `from . import _engine` imports the module; `from ._engine import X`, X.
                submodule = f"{source}.{alias.name}"
                targets.append(submodule if submodule in known else source)
        for target in targets:
            # `import a.b.c` runs a.b.c; the nearest module of the package it names.
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target.split(".")[0] == package and target != module.name:
                yield Import(module.name, target, node.lineno, id(node) in in_function)


def import_graph(known: dict[str, Module]) -> dict[str, dict[str, list[Import]]]:
    """importer -> imported -> the import statements, without the allowed lazy imports."""
    graph: dict[str, dict[str, list[Import]]] = {name: {} for name in known}
    for module in known.values():
        for edge in imports(module, known):
            if (edge.importer, edge.imported) in ALLOWED_LAZY and edge.in_function:
                continue
            graph[edge.importer].setdefault(edge.imported, []).append(edge)
    return graph


def circles(graph: dict[str, dict[str, list[Import]]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan): the modules that
    import each other, directly or not."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:  # recursion depth: at most the number of modules
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in sorted(graph[node]):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(components)


def cycles(graph: dict[str, dict[str, list[Import]]]) -> list[list[str]]:
    """One shortest cycle through each circle's first module."""
    return [_cycle_in(graph, set(c)) for c in circles(graph)]


def _cycle_in(graph: dict[str, dict[str, list[Import]]], component: set[str]) -> list[str]:
    """A shortest cycle through the component's first module, by breadth-first search."""
    start = min(component)
    came_from: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for succ in sorted(graph[node]):
                if succ not in component or succ in came_from:
                    continue
                came_from[succ] = node
                if succ == start:
                    path = [start]
                    while path[-1] != start or len(path) == 1:
                        path.append(came_from[path[-1]])
                    return path[::-1]
                following.append(succ)
        frontier = following
    raise AssertionError(f"no cycle through {start}")  # pragma: no cover  (an SCC has one)


def describe(graph: dict[str, dict[str, list[Import]]]) -> str:
    """Each circle: its modules, one cycle, and every import between its modules."""
    text = []
    for circle, cycle in zip(circles(graph), cycles(graph), strict=True):
        text.append(f"{len(circle)} modules import each other: {', '.join(circle)}")
        text.append("  for one: " + " -> ".join(cycle))
        for importer in circle:
            for imported in sorted(set(graph[importer]) & set(circle)):
                lines = sorted({(e.line, e.in_function) for e in graph[importer][imported]})
                where = ", ".join(f"{n}{' (in a function)' if f else ''}" for n, f in lines)
                text.append(f"  {importer} imports {imported}: line {where}")
    return "\n".join(text)


# -- private names ------------------------------------------------------------------------


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def defined_private_names(module: Module) -> set[str]:
    """The private names ``module`` defines: module-level and class-level names, functions,
    methods, attributes assigned through ``self``/``cls``, ``__slots__`` entries."""
    names: set[str] = set()

    def bind(target: ast.AST) -> None:
        if isinstance(target, ast.Name):
            names.add(target.id)
        elif isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name):
            if target.value.id in ("self", "cls"):
                names.add(target.attr)
        elif isinstance(target, (ast.Tuple, ast.List)):
            for element in target.elts:
                bind(element)

    for node in ast.walk(module.tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            for target in node.targets:
                bind(target)
                if isinstance(target, ast.Name) and target.id == "__slots__":
                    names.update(
                        c.value
                        for c in ast.walk(node.value)
                        if isinstance(c, ast.Constant) and isinstance(c.value, str)
                    )
        elif isinstance(node, (ast.AnnAssign, ast.AugAssign)):
            bind(node.target)
    return {name for name in names if _private(name)}


@dataclass(frozen=True)
class Access:
    module: str
    line: int
    what: str

    def __str__(self) -> str:
        return f"{self.module}:{self.line}: {self.what}"


def private_accesses(known: dict[str, Module]) -> list[Access]:
    """Each use, in one module, of a private name another module of the package defines.

    - ``from X import _name`` where X is another module and ``_name`` not a submodule
      (the package's modules are private by name: importing one is fine);
    - ``module._name`` through a name bound to another module of the package;
    - ``obj._name`` (and ``getattr``/``setattr``/``hasattr`` with a constant ``"_name"``),
      ``obj`` not ``self``/``cls``, where ``_name`` is defined in another module of the
      package and not in this one. (By name: an access to a private name that this module
      defines too is taken as its own.)
    """
    defined = {name: defined_private_names(m) for name, m in known.items()}
    found: list[Access] = []
    for module in known.values():
        own = defined[module.name]
        elsewhere = set().union(*(d for n, d in defined.items() if n != module.name))
        aliases: dict[str, str] = {}  # local name -> module of the package it is bound to
        for edge_node in ast.walk(module.tree):
            if isinstance(edge_node, ast.ImportFrom):
                if edge_node.level:
                    base = _base(module, edge_node.level)
                    source = f"{base}.{edge_node.module}" if edge_node.module else base
                else:
                    source = edge_node.module or ""
                if source not in known:
                    continue
                for alias in edge_node.names:
                    submodule = f"{source}.{alias.name}"
                    if submodule in known:
                        aliases[alias.asname or alias.name] = submodule
                    elif _private(alias.name) and source != module.name:
                        found.append(
                            Access(
                                module.name,
                                edge_node.lineno,
                                f"from {source} import {alias.name}",
                            )
                        )
            elif isinstance(edge_node, ast.Import):
                for alias in edge_node.names:
                    if alias.asname and alias.name in known:
                        aliases[alias.asname] = alias.name
        for node in ast.walk(module.tree):
            if isinstance(node, ast.Attribute) and _private(node.attr):
                value = node.value
                if isinstance(value, ast.Name) and value.id in ("self", "cls"):
                    continue
                if isinstance(value, ast.Name) and value.id in aliases:
                    target = aliases[value.id]
                    if target != module.name and f"{target}.{node.attr}" not in known:
                        found.append(Access(module.name, node.lineno, f"{target}.{node.attr}"))
                    continue
                if node.attr in elsewhere and node.attr not in own:
                    found.append(
                        Access(module.name, node.lineno, f"{ast.unparse(node)} (another module's)")
                    )
            elif (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id in ("getattr", "setattr", "hasattr", "delattr")
                and len(node.args) >= 2
                and isinstance(node.args[1], ast.Constant)
                and isinstance(node.args[1].value, str)
            ):
                name = node.args[1].value
                if _private(name) and name in elsewhere and name not in own:
                    found.append(Access(module.name, node.lineno, f"{ast.unparse(node)}"))
    return sorted(found, key=lambda a: (a.module, a.line, a.what))


# -- the checks on the package --------------------------------------------------------------


@functools.cache
def package_modules() -> dict[str, Module]:
    """asyncflow's modules, read once for the three checks."""
    return modules(PACKAGE, "asyncflow")


def test_no_import_circle_but_the_lazy_cli_import() -> None:
    graph = import_graph(package_modules())
    assert not circles(graph), "import circles:\n" + describe(graph)


def test_the_allowed_lazy_import_is_the_only_edge_left_out_and_stays_lazy() -> None:
    known = package_modules()
    edges = [e for m in known.values() for e in imports(m, known)]
    lazy = [e for e in edges if (e.importer, e.imported) in ALLOWED_LAZY]
    assert lazy, "flow.cli() no longer imports the CLI: drop it from ALLOWED_LAZY"
    assert all(e.in_function for e in lazy), "the CLI must stay imported on first use"


def test_no_module_uses_another_modules_private_names() -> None:
    found = private_accesses(package_modules())
    assert not found, "private names used across modules:\n" + "\n".join(map(str, found))


# -- the checks can fail: small synthetic packages ------------------------------------------


def package(tmp_path: Path, files: dict[str, str]) -> dict[str, Module]:
    return modules(_write(tmp_path / "pkg", files), "pkg")


def _write(root: Path, files: dict[str, str]) -> Path:
    for name, text in {"__init__.py": "", **files}.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(textwrap.dedent(text))
    return root


def test_a_circle_through_a_function_or_type_checking_import_is_found(tmp_path: Path) -> None:
    known = package(
        tmp_path,
        {
            "_a.py": "from ._b import B\n",
            "_b.py": """
                from typing import TYPE_CHECKING
                if TYPE_CHECKING:
                    from ._c import C
            """,
            "_c.py": "def f():\n    from . import _a\n",
            "_d.py": "from ._a import x\n",  # into the circle, not on it
            "_sub/__init__.py": "",
            "_sub/_e.py": "from .._d import y\nfrom ..  import _c\n",
        },
    )
    graph = import_graph(known)
    assert graph["pkg._sub._e"].keys() == {"pkg._d", "pkg._c"}  # relative imports resolved
    assert cycles(graph) == [["pkg._a", "pkg._b", "pkg._c", "pkg._a"]]
    assert circles(graph) == [["pkg._a", "pkg._b", "pkg._c"]]
    text = describe(graph)
    assert "  pkg._c imports pkg._a: line 2 (in a function)" in text.splitlines()
    assert "  pkg._b imports pkg._c: line 4" in text.splitlines()
    assert "pkg._d" not in text


def test_a_circle_through_the_package_init_is_found(tmp_path: Path) -> None:
    known = package(tmp_path, {"__init__.py": "from ._a import A\n", "_a.py": "from . import B\n"})
    assert cycles(import_graph(known)) == [["pkg", "pkg._a", "pkg"]]


def test_one_way_imports_pass(tmp_path: Path) -> None:
    known = package(
        tmp_path,
        {
            "__init__.py": "from ._a import A\nfrom ._b import B\n",
            "_a.py": "import pkg._b\nfrom . import _b\n",
            "_b.py": "import json\nfrom .._outside import x\n",
        },
    )
    assert cycles(import_graph(known)) == []


def test_only_the_allowed_lazy_import_may_close_a_circle(tmp_path: Path) -> None:
    lazy = {
        "_flow.py": "def cli():\n    from ._cli import main\n",
        "_cli.py": "from . import _flow\n",
    }
    known = modules(_write(tmp_path / "a", lazy), "asyncflow")
    assert cycles(import_graph(known)) == []
    eager = {**lazy, "_flow.py": "from ._cli import main\n"}
    known = modules(_write(tmp_path / "b", eager), "asyncflow")
    assert cycles(import_graph(known)) == [["asyncflow._cli", "asyncflow._flow", "asyncflow._cli"]]


def test_private_names_used_across_modules_are_found(tmp_path: Path) -> None:
    known = package(
        tmp_path,
        {
            "_context.py": """
                _LIMIT = 3
                class Context:
                    __slots__ = ("_slot",)
                    def __init__(self):
                        self._fatal = None
                        self._suspended = False
                    def _journal(self): ...
                    def mine(self, other: "Context"):
                        return other._fatal, self._suspended, self.__class__
            """,
            "_engine.py": """
                from . import _context
                from ._context import _LIMIT, Context
                import pkg._context as ctxmod
                def execute(ctx):
                    ctx._suspended = True
                    if getattr(ctx, "_slot", None):
                        return ctx._journal(), _context._LIMIT, ctxmod._LIMIT
                    return ctx.__dict__, ctx._own, ctx._private_to_nobody
                class Engine:
                    def __init__(self):
                        self._own = 1
                    def run(self):
                        return self._fatal  # through self: not checked
            """,
        },
    )
    assert [str(a) for a in private_accesses(known)] == [
        "pkg._engine:3: from pkg._context import _LIMIT",
        "pkg._engine:6: ctx._suspended (another module's)",
        "pkg._engine:7: getattr(ctx, '_slot', None)",
        "pkg._engine:8: ctx._journal (another module's)",
        "pkg._engine:8: pkg._context._LIMIT",
        "pkg._engine:8: pkg._context._LIMIT",
    ]


def test_private_names_used_where_they_are_defined_pass(tmp_path: Path) -> None:
    known = package(
        tmp_path,
        {
            "_a.py": """
                from . import _b
                from ._b import public
                class A:
                    def __init__(self):
                        self._x = 1
                    def same(self, other):
                        return other._x, self._x, _b.public, type(self).__name__
            """,
            "_b.py": "def public(): ...\n",
            "_sub/__init__.py": "from .. import _a\n",  # a private module, not a private name
        },
    )
    assert private_accesses(known) == []
