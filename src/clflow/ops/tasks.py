"""Prefect tasks that run DVC: one stage (`dvc repro --single-item`) or an experiment.

Every stage runs through DVC (`dvc repro --single-item`, or `dvc exp run` with parameter
overrides), so flow runs and `dvc repro` share one cache and one `dvc.lock`. A stage is
retried only when it failed for a reason a retry can fix (a crash, a held lock, I/O); a user
error (the stage printed `error: ...`) is not.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.states import Completed

from clflow.ops.console import StageConsole
from clflow.ops.dvcrun import StageFailed, checked_dvc, repro_stage


def _retryable(task_obj, task_run, state) -> bool:
    exc = state.result(raise_on_failure=False)
    return not isinstance(exc, StageFailed) or exc.retryable


@task(
    name="dvc-stage",
    task_run_name="{stage}",
    retries=2,
    retry_delay_seconds=[2, 10],
    retry_condition_fn=_retryable,
)
def stage_task(
    stage: str,
    project: str,
    env: dict[str, str],
    timeout: float | None = None,
    up_to_date: bool = False,
):
    """One DVC stage; DVC skips it when its deps and params are unchanged. Past `timeout`
    seconds it is stopped (not retried). Its DVC output goes to the task's logs line by line as
    it is printed (the stage's progress included), and its state says "cached" or "ran 41 s"
    (the Prefect UI shows both).

    `up_to_date`: the flow's `dvc status` found nothing to run in any of its stages (under the
    project lock, so nothing changed since), so no `dvc repro` is started only to skip: a
    cached run of the pipeline saves a DVC start (~1.5 s) a stage."""
    t0 = time.monotonic()
    console = StageConsole()  # the stage, its progress and its end where the flow was started
    on_line = console.follow(task_log_line())
    if up_to_date:
        on_line(f"Stage '{stage}' didn't change, skipping (dvc status: up to date)")
        return Completed(message="cached", data="cached")
    status = repro_stage(stage, project, console.env(env), timeout, on_line=on_line)
    seconds = time.monotonic() - t0
    return Completed(
        message="cached" if status == "cached" else f"ran {seconds:.0f} s", data=status
    )


def task_log_line():
    """A callback that logs one line of a subprocess's output to the running task's log (blank
    lines and DVC's progress-bar redraws skipped)."""
    logger = get_run_logger()

    def log_line(line: str) -> None:
        text = line.rstrip()
        if text and "\r" not in text:
            logger.info("%s", text)

    return log_line


def run_stage(
    stage: str,
    project: str,
    env: dict[str, str],
    timeout: float | None = None,
    up_to_date: bool = False,
) -> str:
    """Run `stage_task` in a flow; "ran" or "cached" (a failure raises, as the task did)."""
    return stage_task(stage, project, env, timeout, up_to_date, return_state=True).result()


@task(name="dvc-push", retries=1, retry_delay_seconds=10)
def push_outs(project: str) -> str:
    """`dvc push` of every out dvc.lock names, when `update.push` is on and the project has a
    default DVC remote; what was done, in one line. A remote that cannot be reached fails the
    task with one line (the results stay in the local cache)."""
    from clflow.config import load_params
    from clflow.ops.remote import NoRemote, push

    root = Path(project)
    if not load_params(root / "params.yaml").update.push:
        return "not pushed (update.push: false)"
    try:
        summary = f"dvc push: {push(root)}"
    except NoRemote:
        return "not pushed: no default DVC remote (make team-up configures one)"
    get_run_logger().info("%s", summary)
    return summary


def override_args(overrides: Mapping[str, Any]) -> list[str]:
    """{'train.epochs': 2} -> ['-S', 'train.epochs=2'] (YAML scalars; lists as [a,b])."""
    import yaml

    args: list[str] = []
    for key, value in overrides.items():
        text = (
            value
            if isinstance(value, str)
            else yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()
        )
        args += ["-S", f"{key}={text}"]
    return args


@task(name="dvc-exp-run", retries=1, retry_delay_seconds=5, retry_condition_fn=_retryable)
def run_experiment(
    project: str,
    overrides: dict[str, Any],
    name: str | None,
    env: dict[str, str],
    targets: list[str] | None = None,
    timeout: float | None = None,
    single_item: bool = False,
) -> str:
    """`dvc exp run --temp -S key=value ... [targets]`: a tracked DVC experiment, workspace
    untouched.

    Returns the experiment's name. `targets` limits it to those stages and what they depend on
    (to those stages alone with `single_item`: their inputs are taken as dvc.lock has them).
    """
    args = (
        ["exp", "run", "--temp", *override_args(overrides)]
        + (["--name", name] if name else [])
        + (["--single-item"] if single_item else [])
        + (targets or [])
    )
    console = StageConsole()
    output = checked_dvc(
        args,
        project,
        console.env(env),
        timeout,
        what="dvc exp run",
        file=Path(project) / "params.yaml",
        field=", ".join(overrides),
        on_line=console.follow(task_log_line()),
    )
    for line in output.splitlines():  # "Ran experiment(s): <name>"
        if line.startswith("Ran experiment"):
            return line.split(":", 1)[1].strip()
    return name or ""
