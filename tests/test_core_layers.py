"""The run executor's modules import one way and keep out of each other's private names.

Read from the source (every import counts: at the top, in a function, under TYPE_CHECKING), so
that a back-edge cannot hide where Python would not trip over it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parent.parent / "asyncflow"

#: The run executor, lowest layer first: each module may import only those before it.
LAYERS = [
    "_exceptions",
    "_record",
    "_steps",
    "_journal",
    "_cursor",
    "_retry",
    "_sideeffect",
    "_branches",
    "_context",
    "_results",
    "_triggers",
    "_workflow",
    "_waits",
    "_events",
    "_engine",
]


def _tree(module: str) -> ast.Module:
    return ast.parse((PACKAGE / f"{module}.py").read_text(encoding="utf-8"))


def _imported(tree: ast.AST) -> set[str]:
    """The package's modules a module imports, anywhere in it."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module is None:  # from . import _steps
                found |= {a.name for a in node.names}
            else:
                found.add(node.module.split(".")[0])
    return found


@pytest.mark.parametrize("module", LAYERS)
def test_the_run_executor_imports_one_way(module: str) -> None:
    below = set(LAYERS[: LAYERS.index(module)])
    above = _imported(_tree(module)) & set(LAYERS) - below
    assert not above, f"{module} imports {sorted(above)}, which import it (or sit above it)"


def test_the_layer_check_sees_a_hidden_back_edge() -> None:
    # The check itself: an import under TYPE_CHECKING or in a function is an edge.
    hidden = ast.parse(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from ._engine import Execution\n"
        "def f():\n    from ._context import Context\n    from . import _branches\n"
    )
    assert _imported(hidden) == {"_engine", "_context", "_branches"}


def _private_uses(tree: ast.AST, own: set[str]) -> list[str]:
    """``x._name`` where ``x`` is not ``self``, ``cls`` or a class of the module itself."""
    uses = []
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and node.attr.startswith("_")
            and not node.attr.startswith("__")
        ):
            base = node.value
            if isinstance(base, ast.Name) and base.id in {"self", "cls", *own}:
                continue
            uses.append(f"line {node.lineno}: {ast.unparse(node)}")
    return uses


@pytest.mark.parametrize(
    "module",
    ["_steps", "_journal", "_cursor", "_retry", "_sideeffect", "_branches", "_results"],
)
def test_no_private_name_of_another_object_is_used(module: str) -> None:
    tree = _tree(module)
    own = {n.name for n in tree.body if isinstance(n, ast.ClassDef)}
    assert _private_uses(tree, own) == []


def test_the_context_and_the_execution_use_no_private_name_of_another_module() -> None:
    context = _tree("_context")
    # `sideeffect(c, ...)` reads the cursor of a Context: a class of the module itself.
    uses = [u for u in _private_uses(context, {"Context"}) if not u.endswith("c._cursor")]
    assert uses == []
    [execution] = [
        n for n in _tree("_engine").body if isinstance(n, ast.ClassDef) and n.name == "Execution"
    ]
    assert _private_uses(execution, set()) == []
