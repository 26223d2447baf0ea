"""The floors of the library, as CONTRIBUTING.md draws them: no package imports one above it
(imports under TYPE_CHECKING aside), and the package graph has no cycle."""

from __future__ import annotations

import ast
from collections import defaultdict

from conftest import ROOT

SRC = ROOT / "src" / "clflow"
# lowest first; a package may import its own floor and those below
FLOORS = [
    {"__init__", "errors", "util"},  # the ground floor
    {"streams", "models", "metrics", "config", "sentence", "checkpoint", "plots", "reporting"},
    {"buffers", "plugins", "learners", "evaluation"},  # what every method is made of
    {"baselines", "tame", "lingo", "retrieval", "federated"},  # the methods
    {"tracking", "monitor"},  # MLflow, and the served model's traffic
    {"ops", "scaffold"},  # plumbing: entry points, DVC runner, Prefect tasks, team, new projects
    {"cli"},
]
FLOOR = {name: level for level, names in enumerate(FLOORS) for name in names}


def top(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def imports(path) -> set[str]:
    """clflow packages a file imports at run time (not under `if TYPE_CHECKING:`)."""
    tree = ast.parse(path.read_text())
    typing_only = {
        id(n)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        for n in ast.walk(node)
    }
    found = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("clflow"):
            if node.module == "clflow":
                found |= {f"clflow.{a.name}" for a in node.names}
            else:
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "clflow"}
    return {top(name) for name in found}


def graph() -> dict[str, set[tuple[str, str]]]:
    edges: dict[str, set[tuple[str, str]]] = defaultdict(set)
    for path in SRC.rglob("*.py"):
        if "flower" in path.relative_to(SRC).parts[:2]:
            continue  # Flower's app runs in its own venv and imports only its siblings
        rel = path.relative_to(SRC.parent).with_suffix("")
        me = top(".".join(rel.parts).removesuffix(".__init__"))
        for other in imports(path) - {me}:
            edges[me].add((other, str(path.relative_to(SRC))))
    return edges


def test_every_package_has_a_floor():
    names = {p.stem if p.is_file() else p.name for p in SRC.iterdir() if p.suffix in {".py", ""}}
    names = {n for n in names if not n.startswith(("_", ".")) or n == "__init__"}
    assert names - {"__pycache__"} <= set(FLOOR), names - set(FLOOR)


def test_no_package_imports_one_above_it():
    upward = [
        f"{where} ({me}, floor {FLOOR[me]}) imports {other} (floor {FLOOR[other]})"
        for me, found in graph().items()
        for other, where in found
        if FLOOR[other] > FLOOR[me]
    ]
    assert upward == []


def test_the_package_graph_has_no_cycle():
    edges = {me: {other for other, _ in found} for me, found in graph().items()}
    done: set[str] = set()

    def visit(node: str, path: tuple[str, ...]) -> None:
        assert node not in path, f"import cycle: {' -> '.join((*path, node))}"
        if node in done:
            return
        for nxt in edges.get(node, ()):
            visit(nxt, (*path, node))
        done.add(node)

    for node in edges:
        visit(node, ())
