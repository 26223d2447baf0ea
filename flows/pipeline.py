"""Prefect flow `clflow-pipeline`: every DVC stage as a Prefect task, in dvc.yaml order.

Stages run through `dvc repro --single-item`, so a flow run and `dvc repro`
share the cache and the results. Run: `python flows/pipeline.py --help`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from prefect import flow, get_run_logger, task

from clflow.dvcrun import repro_stage, stage_names
from clflow.errors import cli_errors
from clflow.reporting import read_metrics, summary_table
from clflow.tracking import pipeline_run


@task(name="dvc-stage", task_run_name="{stage}")
def run_stage(stage: str, project: str, env: dict[str, str]) -> str:
    """One DVC stage; DVC skips it when its deps and params are unchanged."""
    return repro_stage(stage, project, env)


@flow(name="clflow-pipeline")
def pipeline(project: str = ".", stages: list[str] | None = None) -> dict:
    """Run the pipeline's stages in order and return the metrics of every stage."""
    logger = get_run_logger()
    project = str(Path(project).resolve())
    with pipeline_run(project) as env:
        for stage in stages or stage_names(project):
            logger.info("stage %s: %s", stage, run_stage(stage, project, env))
        metrics = read_metrics(Path(project) / "metrics")
    logger.info("summary\n%s", summary_table(metrics))
    return metrics


@cli_errors
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--project", default=".", help="clflow project directory (holds dvc.yaml)")
    parser.add_argument("--stage", action="append", help="run only these stages (repeatable)")
    args = parser.parse_args(argv)
    print(summary_table(pipeline(project=args.project, stages=args.stage)))


if __name__ == "__main__":
    sys.exit(main())
