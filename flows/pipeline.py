"""Prefect flow `clflow-pipeline`: every DVC stage as a Prefect task, in dvc.yaml order.

Stages run through `dvc repro --single-item`, so a flow run and `dvc repro` share
the cache and the results. With parameter overrides the run is a DVC experiment
(`dvc exp run --temp -S key=value`): tracked, comparable with `dvc exp show` /
`dvc metrics diff`, and the workspace is left as it was. One run per project at a
time (a project lock). Run: `python flows/pipeline.py --help`.
"""

from __future__ import annotations

import clflow.ops.quiet  # noqa: F401  (first: Prefect reads its settings when imported)

# isort: split
import sys
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger

from clflow.config import check_overrides
from clflow.errors import ConfigError
from clflow.ops.artifacts import publish
from clflow.ops.dvcrun import experiment_metrics, up_to_date
from clflow.ops.flowcli import flow_main, flow_parser, flow_settings, start_flow_cli
from clflow.ops.tasks import push_outs, run_experiment, run_stage
from clflow.reporting import read_metrics, summary_table
from clflow.tracking.runs import pipeline_run
from clflow.util.locks import project_lock


@flow(name="clflow-pipeline")
def pipeline(
    project: str = ".",
    stages: list[str] | None = None,
    overrides: dict[str, Any] | None = None,
    experiment: str | None = None,
    lock_timeout: float = 600.0,
    stage_timeout: float | None = None,
) -> dict:
    """Run the pipeline's stages in order (or one DVC experiment with `overrides`); return every
    stage's metrics.

    `stages` limits the run to those stages (with overrides: to them and what they depend on).
    `stage_timeout` (seconds) overrides `flows.stage_timeout(s)` in params.yaml for every stage.
    """
    logger = get_run_logger()
    root = Path(project).resolve()
    to_run, timeouts = flow_settings(root, stages, stage_timeout)  # before anything is written
    if overrides:
        check_overrides(
            root / "params.yaml", overrides
        )  # a typo stops here, not inside the experiment
    with project_lock(root, lock_timeout):
        # every stage cached: no new, empty MLflow run; link the one that made the results
        cached = not overrides and up_to_date(root, to_run)
        with pipeline_run(root, cached=cached) as env:
            done, metrics = run_pipeline(
                root, to_run, timeouts, overrides, experiment, env, stages, cached
            )
        # an experiment leaves the workspace (and its outs) as they were: nothing to push
        pushed = "" if overrides else f"\n{push_outs(str(root))}."
        note = "\nEvery stage was cached: the MLflow link is the run that made these results."
        publish("clflow pipeline run", "clflow-pipeline", done, metrics, env, root,
                note * cached + pushed)  # fmt: skip
    logger.info("summary\n%s", summary_table(metrics))
    return metrics


def run_pipeline(
    root: Path,
    to_run: list[str],
    timeouts: dict[str, float],
    overrides: dict[str, Any] | None,
    experiment: str | None,
    env: dict[str, str],
    stages: list[str] | None,
    cached: bool = False,
) -> tuple[dict[str, str], dict]:
    """The stages in order (or one DVC experiment with `overrides`): what each did, and the
    metrics. `cached`: `dvc status` found every stage up to date (none is started)."""
    if overrides:
        budget = sum(timeouts.values())  # every stage may run
        name = run_experiment(str(root), overrides, experiment, env, stages, budget)
        done = {f"dvc exp run {name}": ", ".join(f"{k}={v}" for k, v in overrides.items())}
        return done, experiment_metrics(root, name)
    done = {s: run_stage(s, str(root), env, timeouts[s], cached) for s in to_run}
    return done, read_metrics(root / "metrics")


@flow_main
def main(argv: list[str] | None = None) -> None:
    parser = flow_parser(__doc__)
    parser.add_argument("--stage", action="append", help="run only these stages (repeatable)")
    parser.add_argument(
        "-S",
        "--set-param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a param (YAML value); the run becomes a DVC experiment",
    )
    parser.add_argument("--name", help="name of the DVC experiment (with -S)")
    args = start_flow_cli(parser, argv)
    overrides = {}
    for item in args.set_param:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"expected KEY=VALUE, got {item!r}", field="-S")
        overrides[key] = value  # DVC parses it as YAML, like `dvc exp run -S`
    print(
        summary_table(
            pipeline(
                project=args.project,
                stages=args.stage,
                overrides=overrides or None,
                experiment=args.name,
                lock_timeout=args.lock_timeout,
                stage_timeout=args.stage_timeout,
            )
        )
    )


if __name__ == "__main__":
    sys.exit(main())
