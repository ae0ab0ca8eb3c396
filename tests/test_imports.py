"""Imports flow one way: no module of the kit imports, directly or through others, a module that imports it back.

The graph is read from the source (every ``import``, at module level or inside a function), so a circle hidden in
a function body counts too."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "ctx_utils"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, known: set[str]) -> set[str]:
    """The kit's modules that ``path`` imports (``from ctx_utils import x`` counts as ``ctx_utils.x`` when x is one)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name in known}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and node.module.startswith("ctx_utils"):
            subs = {f"{node.module}.{a.name}" for a in node.names} & known
            found |= subs or {node.module}
    return found


def import_graph() -> dict[str, set[str]]:
    paths = sorted(PACKAGE.rglob("*.py"))
    known = {module_name(p) for p in paths}
    graph = {module_name(p): imports_of(p, known) - {module_name(p)} for p in paths}
    # a package's __init__ importing its own modules is how packages are built, not a circle
    return {m: {d for d in deps if not d.startswith(m + ".")} for m, deps in graph.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                return stack[stack.index(dep):] + [dep]
            if dep not in state and (cycle := visit(dep)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_finder_sees_a_circle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_circle_in_the_kit():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import circle: " + " → ".join(cycle)



def test_only_the_tools_import_the_tools():
    """``ctx_utils.tools`` runs the kit (notebooks headless, the Colab install, command lines): it may use any module,
    and no module outside it uses it, so what a notebook or a step does never depends on how the kit is run."""
    uses = sorted(f"{module} imports {dep}" for module, deps in import_graph().items() if not module.startswith("ctx_utils.tools")
                  for dep in deps if dep == "ctx_utils.tools" or dep.startswith("ctx_utils.tools."))
    assert uses == [], "; ".join(uses)
