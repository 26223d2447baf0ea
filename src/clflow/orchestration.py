"""Prefect tasks and reports shared by the flows in `flows/`.

Every stage runs through DVC (`dvc repro --single-item`, or `dvc exp run` with
parameter overrides), so flow runs and `dvc repro` share one cache and one
`dvc.lock`. A stage is retried only when it failed for a reason a retry can fix
(a crash, a held lock, I/O); a user error (the stage printed `error: ...`) is not.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.states import Completed

from clflow.dvcrun import StageFailed, checked_dvc, repro_stage
from clflow.errors import ClflowError
from clflow.reporting import method_rows, summary_table
from clflow.tracking import EXPERIMENT_ENV, PARENT_ENV, run_url


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
def stage_task(stage: str, project: str, env: dict[str, str], timeout: float | None = None):
    """One DVC stage; DVC skips it when its deps and params are unchanged. Past `timeout`
    seconds it is stopped (not retried). Its DVC output goes to the task's logs line by line as
    it is printed (the stage's progress included), and its state says "cached" or "ran 41 s"
    (the Prefect UI shows both)."""
    t0 = time.monotonic()
    status = repro_stage(stage, project, env, timeout, on_line=task_log_line())
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


def run_stage(stage: str, project: str, env: dict[str, str], timeout: float | None = None) -> str:
    """Run `stage_task` in a flow; "ran" or "cached" (a failure raises, as the task did)."""
    return stage_task(stage, project, env, timeout, return_state=True).result()


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
    output = checked_dvc(
        args,
        project,
        env,
        timeout,
        what="dvc exp run",
        file=Path(project) / "params.yaml",
        field=", ".join(overrides),
        on_line=task_log_line(),
    )
    for line in output.splitlines():  # "Ran experiment(s): <name>"
        if line.startswith("Ran experiment"):
            return line.split(":", 1)[1].strip()
    return name or ""


def mlflow_link(env: Mapping[str, str]) -> str:
    """A link to the pipeline's parent run in the MLflow UI (CLFLOW_MLFLOW_UI, default
    127.0.0.1:5000)."""
    return run_url(env.get(EXPERIMENT_ENV, ""), env.get(PARENT_ENV, ""))


def run_markdown(
    title: str, stages: Mapping[str, str], metrics: dict[str, dict], link: str, extra: str = ""
) -> str:
    """The markdown artifact of a run: what each stage did, the metrics table, the MLflow link."""
    lines = [f"# {title}", "", "| stage | result |", "|---|---|"]
    lines += [f"| {s} | {r} |" for s, r in stages.items()]
    lines += [
        "",
        summary_table(metrics) if method_rows(metrics) else "_no metrics yet_",
        "",
        *outcomes(metrics),
        f"MLflow run: [{link}]({link})",
    ]
    return "\n".join(lines + ([extra] if extra else [])) + "\n"


def outcomes(metrics: dict[str, dict]) -> list[str]:
    """Markdown lines for the registry decision and the federated merge, when the run has them."""
    lines = []
    reg = metrics.get("register") or {}
    if "version" in reg:
        alias = "champion" if reg.get("promoted") else "challenger"
        decision = "promoted" if reg.get("promoted") else "rejected"
        lines += [
            f"**Registry:** version {int(reg['version'])}, alias `{alias}`: {decision} "
            f"({reg.get('reason', '')})",
            "",
        ]
    fed = metrics.get("federated") or {}
    if "merged_accuracy" in fed:
        lines += [
            f"**Federated:** merged prototypes {fed['merged_accuracy']:.3f} "
            f"(centralised {fed.get('central_accuracy', float('nan')):.3f}, each client alone "
            f"{fed.get('local_only_accuracy_mean', float('nan')):.3f}), "
            f"{int(fed.get('rejected_updates', 0))} updates rejected",
            "",
        ]
    return lines


def matrix_table(path: Path) -> list[dict[str, Any]]:
    """The accuracy matrix CSV (rows: trained through experience i) as table-artifact rows."""
    import polars as pl

    if not path.exists():
        return []
    return [
        {k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}
        for row in pl.read_csv(path).to_dicts()
    ]


def publish(
    title: str,
    key: str,
    stages: Mapping[str, str],
    metrics: dict[str, dict],
    env: Mapping[str, str],
    project: Path,
    extra: str = "",
) -> None:
    """Markdown and table artifacts of a flow run (shown in the Prefect UI)."""
    from prefect.artifacts import create_markdown_artifact, create_table_artifact

    create_markdown_artifact(
        run_markdown(title, stages, metrics, mlflow_link(env), extra), key=key, description=title
    )
    table = matrix_table(project / "plots" / "tame" / "matrix.csv")
    if table:
        create_table_artifact(
            table,
            key=f"{key}-accuracy-matrix",
            description="TAME accuracy matrix R[i][j]: trained through i, tested on j",
        )


def flow_settings(
    project: str | Path, stages: list[str] | None, stage_timeout: float | None
) -> tuple[list[str], dict[str, float]]:
    """Check a flow's project and stage names before anything is written (no `.clflow/` in a
    wrong directory, no retries of a typo); return the stages to run (all when None) and
    every stage's timeout."""
    from clflow.config import load_params
    from clflow.dvcrun import check_stages, stage_names

    root = Path(project)
    if not root.is_dir():
        raise ClflowError("not a directory", file=root, field="--project")
    every = stage_names(root)
    check_stages(root, stages or [])
    flows = load_params(root / "params.yaml").flows
    check_stages(root, list(flows.stage_timeouts), field="flows.stage_timeouts")
    return stages or every, {s: stage_timeout or flows.timeout(s) for s in every}


def flow_parser(doc: str | None) -> argparse.ArgumentParser:
    """The options of every flow entry point: --project, --lock-timeout, --stage-timeout."""
    from clflow.stage import seconds

    parser = argparse.ArgumentParser(
        description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--project", default=".", help="clflow project directory (holds dvc.yaml)")
    parser.add_argument(
        "--lock-timeout",
        type=float,
        default=600.0,
        help="seconds to wait while another run holds the project (default 600)",
    )
    parser.add_argument(
        "--stage-timeout",
        type=seconds,
        help="seconds any stage may run (default: flows.stage_timeout(s) in params.yaml)",
    )
    return parser


def start_flow_cli(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """Parse a flow's command line, make SIGTERM unwind it, and check a configured Prefect API."""
    from clflow.services import check_prefect_api

    args = parser.parse_args(argv)
    exit_on_sigterm()
    check_prefect_api()  # a configured server that is down: one line, not a retry loop
    return args


def exit_on_sigterm() -> None:
    """Turn SIGTERM into SystemExit, so a stopped flow unwinds: the stage it runs is stopped, the
    project lock released and Prefect's temporary API server shut down (no orphans)."""
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


class _UserErrorsWithoutTraceback(logging.Filter):
    """Prefect logs a task or flow exception with its traceback; a ClflowError is a user error: one
    line."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, ClflowError):
            record.exc_info, record.exc_text = None, None
        return True


for _name in ("prefect.flow_runs", "prefect.task_runs"):
    logging.getLogger(_name).addFilter(_UserErrorsWithoutTraceback())
    # flow and task runs log at INFO to the Prefect API (the run pages), whatever the
    # console's PREFECT_LOGGING_LEVEL (the Makefile keeps the console at WARNING)
    logging.getLogger(_name).setLevel(logging.INFO)
