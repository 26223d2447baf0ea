"""Run DVC stages as subprocesses, so flows and `dvc repro` share one cache and one lock file."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable
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


def check_stages(project: str | Path, stages: list[str], field: str = "--stage") -> None:
    """Every name in `stages` is a stage of dvc.yaml (a typo is refused, not retried)."""
    known = stage_names(project)
    unknown = [s for s in stages if s not in known]
    if unknown:
        raise ClflowError(
            f"no stage '{unknown[0]}' (stages: {', '.join(known)})",
            file=Path(project) / "dvc.yaml",
            field=field,
        )


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


MEMORY_ENV = "CLFLOW_DVC_MEMORY_BYTES"


def memory_limit() -> int:
    """Bytes of data (heap and private writable mappings) DVC and each stage process may use:
    CLFLOW_DVC_MEMORY_BYTES (0: no limit), else three quarters of the machine's memory. A
    runaway, such as a YAML alias bomb that DVC expands, fails with MemoryError instead of
    taking the machine down."""
    if os.environ.get(MEMORY_ENV):
        return int(os.environ[MEMORY_ENV])
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") * 3 // 4


def limit_memory(pid: int) -> None:
    """Cap a started process's data size (its children inherit the cap). RLIMIT_DATA, not
    RLIMIT_AS: address space a GPU runtime only reserves does not count. Set from here, not in
    the child (`preexec_fn` is unsafe in the threads Prefect runs tasks in)."""
    import resource

    limit = memory_limit()
    if limit <= 0:
        return
    try:
        resource.prlimit(pid, resource.RLIMIT_DATA, (limit, limit))
    except (OSError, ValueError):  # the process is gone already, or the limit is not allowed
        pass


def dvc(
    args: list[str],
    project: str | Path,
    env: dict[str, str] | None = None,
    timeout: float | None = None,
    on_line: Callable[[str], None] | None = None,
) -> subprocess.CompletedProcess:
    """`dvc <args>` in `project` (via this interpreter, so the right DVC runs).

    DVC and the stage it runs form their own process group: past `timeout` seconds, or
    when this process is interrupted or terminated, the whole group is stopped (SIGTERM,
    then SIGKILL), so no stage outlives the run that started it. A timeout raises
    subprocess.TimeoutExpired after that. With `on_line`, stdout and stderr are read as one
    stream and each line is passed on as it is printed (a stage's progress reaches the log
    while it runs); the result then holds the merged text in `stdout`.
    """
    proc = subprocess.Popen(
        [sys.executable, "-m", "dvc", *args],
        cwd=project,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE if on_line is None else subprocess.STDOUT,
        text=True,
        env=dvc_env(env),
        start_new_session=True,
    )
    limit_memory(proc.pid)
    try:
        if on_line is None:
            out, err = proc.communicate(timeout=timeout)
        else:
            out, err = _follow(proc, on_line, timeout), ""
    except BaseException:  # a timeout, Ctrl-C, SIGTERM turned into SystemExit
        _stop_group(proc)
        raise
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def _follow(proc: subprocess.Popen, on_line: Callable[[str], None], timeout: float | None) -> str:
    """Pass each output line of `proc` to `on_line` as it comes; its whole output at the end.
    A reader thread keeps the pipe drained, so the deadline is kept even when nothing prints."""
    import threading

    lines: list[str] = []

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            try:
                on_line(line.rstrip("\n"))
            except Exception:  # a logging hiccup must not stop reading (the pipe would fill)
                pass

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    proc.wait(timeout=timeout)
    reader.join(timeout=30)
    return "".join(lines)


def _stop_group(proc: subprocess.Popen, grace: float = 10.0) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.communicate(timeout=grace)
            return
        except subprocess.TimeoutExpired:
            continue


def repro_stage(
    stage: str,
    project: str | Path,
    env: dict[str, str] | None = None,
    timeout: float | None = None,
    on_line: Callable[[str], None] | None = None,
) -> str:
    """`dvc repro --single-item <stage>`; return "ran" or "cached". `on_line` gets each line of
    DVC's output (with the stage's own) as it is printed.

    Raises StageFailed carrying the stage's own error line on failure, and a
    non-retryable StageFailed when the stage runs past `timeout` seconds (it is stopped;
    its previous outs stay, see StagedOuts).
    """
    output = checked_dvc(
        ["repro", "--single-item", stage],
        project,
        env,
        timeout,
        what=f"stage '{stage}'",
        file=Path(project) / "dvc.yaml",
        field=f"stages.{stage}",
        on_line=on_line,
    )
    return "cached" if "didn't change, skipping" in output else "ran"


def up_to_date(project: str | Path, stages: list[str], env: dict[str, str] | None = None) -> bool:
    """Whether `dvc status` finds nothing to run for `stages` (so a repro would only skip)."""
    import json

    output = checked_dvc(
        ["status", "--json", *stages],
        project,
        env,
        120,
        what="dvc status",
        file=Path(project) / "dvc.yaml",
        field="stages",
    )
    lines = [ln for ln in output.splitlines() if ln.strip().startswith("{")]
    return bool(lines) and json.loads(lines[-1]) == {}


def checked_dvc(
    args: list[str],
    project: str | Path,
    env: dict[str, str] | None,
    timeout: float | None,
    *,
    what: str,
    file: Path,
    field: str,
    on_line: Callable[[str], None] | None = None,
) -> str:
    """`dvc <args>`, its output on success; StageFailed naming `what` otherwise: with the
    stage's own error line (not retryable when it is a user error), or past `timeout` seconds
    (stopped, not retryable)."""
    try:
        proc = dvc(args, project, env, timeout, on_line)
    except subprocess.TimeoutExpired:
        raise StageFailed(
            f"{what} did not finish within {timeout:g} s and was stopped "
            "(flows.stage_timeout / flows.stage_timeouts in params.yaml, or --stage-timeout)",
            file=Path(project) / "params.yaml",
            field="flows.stage_timeout",
            retryable=False,
        ) from None
    output = proc.stdout + proc.stderr
    if proc.returncode != 0:
        raise StageFailed(
            f"{what} failed (exit {proc.returncode}):\n{error_lines(output)}",
            file=file,
            field=field,
            retryable=not own_errors(output),
        )
    return output


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
