"""The clflow source files a script runs: its transitive imports inside the project.

Used to prove that each stage's `deps` in dvc.yaml are complete (a change to any file
a stage imports must rerun it), and to fingerprint the code behind a checkpoint.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

SRC = Path(__file__).resolve().parents[2]  # src/
ROOT = SRC.parent  # the project (for flows/)


def _module_file(name: str) -> Path | None:
    """The file that defines module `name` (clflow.* under src/, flows.* under the project)."""
    base = (
        SRC if name.split(".")[0] == "clflow" else ROOT if name.split(".")[0] == "flows" else None
    )
    if base is None:
        return None
    path = base.joinpath(*name.split("."))
    for cand in (path.with_suffix(".py"), path / "__init__.py"):
        if cand.is_file():
            return cand
    return None


def _runtime_nodes(tree: ast.AST) -> Iterator[ast.AST]:
    """Every node, except under `if TYPE_CHECKING:` (imports for type checkers never run)."""
    todo = [tree]
    while todo:
        node = todo.pop()
        yield node
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                todo.extend(child.orelse)
            else:
                todo.append(child)


def _imported_names(path: Path) -> set[str]:
    """Module names imported by a file when it runs: import statements anywhere (not under
    `if TYPE_CHECKING:`), and importlib.import_module("...")."""
    names: set[str] = set()
    for node in _runtime_nodes(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)  # may name a submodule
        elif (
            isinstance(node, ast.Call)
            and getattr(node.func, "attr", None) == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            names.add(node.args[0].value)
    return names


def _with_parents(name: str) -> list[str]:
    """Importing a.b.c runs a/__init__.py and a/b/__init__.py first."""
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


def source_closure(*scripts: str | Path) -> set[Path]:
    """Every project source file the scripts import, directly or not (the scripts included)."""
    todo = [Path(s).resolve() for s in scripts]
    seen: set[Path] = set()
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for name in _imported_names(path):
            for part in _with_parents(name):
                found = _module_file(part)
                if found is not None and found not in seen:
                    todo.append(found)
    return seen


def module_level_imports(files: set[Path] | list[Path]) -> set[str]:
    """Top-level names of the third-party modules these files import when imported (not inside
    functions)."""
    import sys

    names: set[str] = set()
    for path in files:
        for node in ast.parse(Path(path).read_text()).body:  # statements run at import time
            if isinstance(node, ast.Import):
                names.update(a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names.add(node.module.split(".")[0])
    return {
        n
        for n in names
        if n not in sys.stdlib_module_names and n not in ("clflow", "flows", "__future__")
    }


def pinned_requirements(modules: set[str]) -> list[str]:
    """`dist==version` for the installed distribution of each module (a local build tag like +cpu
    dropped)."""
    from importlib.metadata import PackageNotFoundError, distribution, packages_distributions

    def named(module: str):  # a distribution named as its module: `mlflow`, not mlflow-skinny
        try:
            return distribution(module)
        except PackageNotFoundError:
            return None

    found = {module: named(module) for module in modules}
    if missing := [module for module, dist in found.items() if dist is None]:
        dists = packages_distributions()  # `yaml` is PyYAML's: reads every file list (~1 s)
        found.update({m: distribution((dists.get(m) or [m])[0]) for m in missing})
    return sorted({f"{d.metadata['Name']}=={d.version.split('+')[0]}" for d in found.values()})
