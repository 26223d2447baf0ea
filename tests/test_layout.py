"""The layout the house rules promise: stages and benchmarks import only the library, and test
files have unique names (pytest imports them by basename: there is no tests/__init__.py)."""

from __future__ import annotations

import ast
from collections import Counter

from conftest import ROOT


def imported_modules(path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module.split(".")[0])
    return names


def test_stages_and_benchmarks_import_nothing_from_each_other():
    found = {
        str(p.relative_to(ROOT)): imported_modules(p) & {"stages", "bench"}
        for folder in ("stages", "bench")
        for p in (ROOT / folder).rglob("*.py")
    }
    assert not {k: v for k, v in found.items() if v}
    assert all("import_module" not in p.read_text() for p in (ROOT / "stages").glob("*.py"))


def test_stages_are_short_scripts_over_the_library():
    """A stage declares its command line and writes its outs; the work is in clflow."""
    for script in (ROOT / "stages").glob("*.py"):
        tree = ast.parse(script.read_text())
        functions = [n.name for n in tree.body if isinstance(n, ast.FunctionDef)]
        assert set(functions) <= {"main", "log_results"}, (script.name, functions)


def test_test_files_have_unique_names():
    names = Counter(p.name for p in (ROOT / "tests").rglob("test_*.py"))
    assert [name for name, n in names.items() if n > 1] == []
