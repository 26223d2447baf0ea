"""Run DVC stages as subprocesses, so flows and `dvc repro` share one cache and one lock file."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

from clflow.errors import ClflowError


class StageFailed(ClflowError):
    """A DVC stage exited non-zero; the message carries the stage's own error.

    `retryable` is False for user errors (the stage printed its own `error:` line:
    bad input or params), which a retry cannot fix.
    """

    def __init__(
        self,
        message: str,
        *,
        file: object | None = None,
        field: str | None = None,
        retryable: bool = True,
    ):
        super().__init__(message, file=file, field=field)
        self.retryable = retryable


def _stages(project: str | Path) -> dict:
    path = Path(project) / "dvc.yaml"
    if not path.exists():
        raise ClflowError("not found: is this a clflow project?", file=path)
    return (yaml.safe_load(path.read_text()) or {}).get("stages", {})


def stage_names(project: str | Path) -> list[str]:
    """Stages in the order dvc.yaml lists them."""
    return list(_stages(project))


def stage_outs(project: str | Path) -> list[str]:
    """Every path a stage writes (outs, metrics, plots), as dvc.yaml names them."""
    return [
        next(iter(out)) if isinstance(out, dict) else out
        for stage in _stages(project).values()
        for kind in ("outs", "metrics", "plots")
        for out in stage.get(kind, [])
    ]


def dvc_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for DVC: this interpreter's bin/ first on PATH, telemetry off."""
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env.setdefault("DVC_NO_ANALYTICS", "1")
    env.setdefault("DO_NOT_TRACK", "1")
    env.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    env.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    env.update(extra or {})
    return env


def own_errors(output: str) -> list[str]:
    """The `error: <file>: ...` lines a clflow entry point printed (DVC's own summary line
    excluded)."""
    return [
        ln
        for ln in output.splitlines()
        if ln.startswith("error: ") and not ln.startswith("error: failed to ")
    ]


def error_lines(output: str, n: int = 15) -> str:
    """The stage's own `error:` lines if it printed any, else the tail of its output."""
    own = own_errors(output)
    return (
        "\n".join(own) if own else "\n".join([ln for ln in output.splitlines() if ln.strip()][-n:])
    )


def dvc(
    args: list[str],
    project: str | Path,
    env: dict[str, str] | None = None,
    timeout: float | None = None,
) -> subprocess.CompletedProcess:
    """`dvc <args>` in `project` (via this interpreter, so the right DVC runs)."""
    return subprocess.run(
        [sys.executable, "-m", "dvc", *args],
        cwd=project,
        capture_output=True,
        text=True,
        env=dvc_env(env),
        timeout=timeout,
    )


def repro_stage(stage: str, project: str | Path, env: dict[str, str] | None = None) -> str:
    """`dvc repro --single-item <stage>`; return "ran" or "cached".

    Raises StageFailed carrying the stage's own error line on failure.
    """
    proc = dvc(["repro", "--single-item", stage], project, env)
    output = proc.stdout + proc.stderr
    if proc.returncode != 0:
        raise StageFailed(
            f"stage '{stage}' failed (exit {proc.returncode}):\n{error_lines(output)}",
            file=Path(project) / "dvc.yaml",
            field=f"stages.{stage}",
            retryable=not own_errors(output),
        )
    return "cached" if "didn't change, skipping" in output else "ran"


def experiment_metrics(project: str | Path, name: str) -> dict[str, dict]:
    """{stage: metrics} as committed in DVC experiment `name` (its git ref under refs/exps)."""
    import json

    refs = subprocess.run(
        ["git", "for-each-ref", "--format=%(refname)", "refs/exps"],
        cwd=project,
        capture_output=True,
        text=True,
    ).stdout.split()
    ref = next((r for r in refs if r.rsplit("/", 1)[-1] == name), None)
    if ref is None:
        raise ClflowError(f"no DVC experiment named '{name}'", file=Path(project) / ".git")
    files = subprocess.run(
        ["git", "ls-tree", "--name-only", f"{ref}:metrics"],
        cwd=project,
        capture_output=True,
        text=True,
    ).stdout.split()
    out = {}
    for f in files:
        if f.endswith(".json"):
            blob = subprocess.run(
                ["git", "show", f"{ref}:metrics/{f}"], cwd=project, capture_output=True, text=True
            )
            out[f.removesuffix(".json")] = json.loads(blob.stdout)
    return out
