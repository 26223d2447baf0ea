"""Fresh copies of a clflow project (git and DVC initialised, one commit), for benchmarks and tests
that must not touch the workspace they start from."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import yaml

PROJECT_FILES = [
    "dvc.yaml",
    "params.yaml",
    "prefect.yaml",
    "stages",
    "src",
    "flows",
    ".dvcignore",
    "data/experiences/README.md",
    "data/incoming/README.md",
]
IGNORED = "mlflow.db\n.mlflow.db.*.lock\nmlruns/\n/models/\n.clflow/\n.team/\n"


def update_params(project: Path, overrides: dict) -> None:
    """Merge {section: {key: value}} into the project's params.yaml."""
    path = project / "params.yaml"
    params = yaml.safe_load(path.read_text())
    for section, values in overrides.items():
        params.setdefault(section, {}).update(values)
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def _git(args: list[str], cwd: Path) -> None:
    proc = subprocess.run(args, cwd=cwd, capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"{args} failed in {cwd}:\n{proc.stdout}\n{proc.stderr}")


def new_project(source: Path, dest: Path, overrides: dict | None = None) -> Path:
    """A copy of `source`'s project files at `dest` with `overrides` applied to params.yaml,
    initialised as a git repository and a DVC project, everything committed."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in PROJECT_FILES:
        src = source / name
        if src.is_dir():
            shutil.copytree(
                src, dest / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info")
            )
        elif src.exists():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    (dest / ".gitignore").write_text(IGNORED)
    update_params(dest, overrides or {})
    for cmd in (
        ["git", "init", "-q"],
        [sys.executable, "-m", "dvc", "init", "-q"],
        ["git", "add", "-A"],
        [
            "git",
            "-c",
            "user.email=clflow@localhost",
            "-c",
            "user.name=clflow",
            "commit",
            "-qm",
            "init",
        ],
    ):
        _git(cmd, dest)
    return dest
