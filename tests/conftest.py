"""Shared fixtures: a quiet offline environment, temp copies of the project, one Prefect API per session."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
QUIET = {
    "DO_NOT_TRACK": "1",
    "DVC_NO_ANALYTICS": "1",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
}
os.environ.update(QUIET)
os.environ.pop("MLFLOW_TRACKING_URI", None)
# Stages run as `python stages/...`: make that this interpreter.
os.environ["PATH"] = str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", "")

# Small but real: one seed, two epochs.
FAST_PARAMS = {"train": {"seeds": [0], "epochs": 2}}
PROJECT_FILES = ["dvc.yaml", "params.yaml", "stages", "src", "flows", ".dvcignore"]


def run(cmd: list[str], cwd: Path, check: bool = True, **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, **kw)
    if check and proc.returncode != 0:
        raise AssertionError(f"{cmd} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def update_params(project: Path, overrides: dict) -> None:
    path = project / "params.yaml"
    params = yaml.safe_load(path.read_text())
    for section, values in overrides.items():
        params.setdefault(section, {}).update(values)
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def make_project(dest: Path, overrides: dict | None = None) -> Path:
    """A git + DVC initialised copy of the project with fast params."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in PROJECT_FILES:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        elif src.exists():
            shutil.copy2(src, dest / name)
    (dest / ".gitignore").write_text("mlflow.db\nmlruns/\n/metrics/\n/plots/\n/models/\n")
    update_params(dest, {**FAST_PARAMS, **(overrides or {})})
    run(["git", "init", "-q"], dest)
    run([sys.executable, "-m", "dvc", "init", "-q"], dest)
    run(["git", "add", "-A"], dest)
    run(["git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "init"], dest)
    return dest


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return make_project(tmp_path / "project")


@pytest.fixture(scope="session")
def built_project(tmp_path_factory) -> Path:
    """One project on which `dvc repro` has run (shared: the pipeline takes tens of seconds)."""
    dest = make_project(tmp_path_factory.mktemp("built") / "project")
    run([sys.executable, "-m", "dvc", "repro"], dest)
    return dest


@pytest.fixture(scope="session")
def prefect_api(tmp_path_factory):
    """One ephemeral Prefect API for the whole session (it takes ~10 s to start)."""
    os.environ["PREFECT_HOME"] = str(tmp_path_factory.mktemp("prefect_home"))
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield
