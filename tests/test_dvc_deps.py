"""dvc.yaml lists every source file each stage runs, so `dvc repro` reruns a stage whenever its code
changes."""

from __future__ import annotations

from pathlib import Path

import yaml

from clflow.util.codedeps import source_closure

ROOT = Path(__file__).resolve().parents[1]


def stages() -> dict:
    return yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


def test_every_imported_source_file_is_a_dependency():
    missing = {}
    for name, stage in stages().items():
        script = stage["cmd"].split()[1]
        deps = [Path(d) for d in stage["deps"]]
        files = [p.relative_to(ROOT) for p in source_closure(ROOT / script)]
        gaps = [str(f) for f in files if not any(f == d or d in f.parents for d in deps)]
        if gaps:
            missing[name] = gaps
    assert not missing, f"dvc.yaml misses code dependencies: {missing}"


def test_closure_follows_lazy_and_importlib_imports(tmp_path):
    closure = {
        p.relative_to(ROOT).as_posix() for p in source_closure(ROOT / "stages" / "federated.py")
    }
    assert "src/clflow/federated/prefect_engine.py" in closure  # imported inside main()
    assert "src/clflow/federated/protocol.py" in closure  # imported by the flow
    assert "src/clflow/__init__.py" in closure  # a parent package runs first
    script = tmp_path / "script.py"
    script.write_text(
        "import importlib\nfrom typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    import clflow.config\n"
        "importlib.import_module('clflow.metrics')\n"
    )
    found = {p.relative_to(ROOT).as_posix() for p in source_closure(script) if p != script}
    assert "src/clflow/metrics.py" in found  # importlib.import_module("...")
    assert "src/clflow/config.py" not in found  # a type checker's import never runs
    register = {p.name for p in source_closure(ROOT / "stages" / "register.py")}
    assert {"pyfunc.py", "registry.py"} <= register  # imported inside main()
