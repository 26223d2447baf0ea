"""Prefect flow `continual-update`: new experiences from `data/incoming/` update the model.

1. intake: each `data/incoming/*.parquet` is validated against the current stream;
   good files move into `data/experiences/` (a DVC dependency of `prepare`), bad
   ones into `data/incoming/rejected/` with a `.reason.txt`;
2. the stages that lead to the model rerun through DVC: `prepare` appends the new
   experiences, `tame` continues from its checkpoint, `register` logs a new
   version of the model and promotes it only if it is better.
Accepted files stay pending (`.clflow/pending-update.json`) until those stages all
succeed, so a failed update is finished by the next run even when nothing new
arrived. Nothing runs when no file arrived and none is pending. Run: `python flows/continual.py
--help`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from prefect import flow, get_run_logger, task

from clflow.config import load_params
from clflow.errors import cli_errors
from clflow.locks import project_lock
from clflow.orchestration import flow_parser, flow_settings, publish, run_stage, start_flow_cli
from clflow.reporting import read_metrics
from clflow.streams import load_stream
from clflow.streams.incoming import Intake, intake, pending, set_pending
from clflow.tracking import pipeline_run

UPDATE_STAGES = ["prepare", "embed_classes", "tame", "register"]


@task(name="intake")
def intake_files(project: Path) -> Intake:
    """Validate and accept (or move aside) every incoming experience file."""
    params = load_params(project / "params.yaml")
    stream = load_stream(project / "data" / "stream")
    return intake(
        project / "data" / "incoming",
        project / "data" / "experiences",
        stream,
        test_size=params.stream.test_size,
        seed=params.stream.seed,
        duplicates=params.stream.duplicates,
    )


@flow(name="continual-update")
def continual_update(
    project: str = ".",
    stages: list[str] | None = None,
    lock_timeout: float = 600.0,
    stage_timeout: float | None = None,
) -> dict:
    """Take in new experience files, update TAME incrementally and register the new model."""
    logger = get_run_logger()
    root = Path(project).resolve()
    stages, timeouts = flow_settings(root, stages or UPDATE_STAGES, stage_timeout)
    with project_lock(root, lock_timeout):
        if not (root / "data" / "stream").exists():  # first run: the stream files must match
            run_stage("prepare", str(root), {}, timeouts["prepare"])
        report = intake_files(root)
        for name, reason in report.rejected.items():
            logger.warning("rejected %s: %s", name, reason)
        if report.waiting:
            logger.info("left for the next run (modified just now): %s", ", ".join(report.waiting))
        owed = pending(root)
        if owed:
            logger.info("finishing an earlier update: %s", ", ".join(owed))
        done, env = {}, {}
        if report.accepted or owed:  # else nothing to train: no MLflow run either
            with pipeline_run(root) as env:
                set_pending(root, owed + report.accepted)  # a failing stage leaves them owed
                done = {s: run_stage(s, str(root), env, timeouts[s]) for s in stages}
                set_pending(root, [])
        metrics = read_metrics(root / "metrics")
        result = {
            "accepted": report.accepted,
            "rejected": report.rejected,
            "waiting": report.waiting,
            "stages": done,
            "trained": owed + report.accepted,
            "register": metrics.get("register", {}) if done else {},
        }
        rejected = "".join(f"\n- rejected `{n}`: {r}" for n, r in report.rejected.items())
        publish(
            "clflow continual update",
            "clflow-continual-update",
            done,
            {k: v for k, v in metrics.items() if k == "tame"},
            env,
            root,
            extra=f"\naccepted: {len(report.accepted)} file(s){rejected}\n\nregister: "
            f"`{json.dumps(result['register'])}`",
        )
    logger.info(
        "continual update: %s", json.dumps({k: v for k, v in result.items() if k != "stages"})
    )
    return result


@cli_errors
def main(argv: list[str] | None = None) -> None:
    args = start_flow_cli(flow_parser(__doc__), argv)
    print(
        json.dumps(
            continual_update(
                project=args.project,
                lock_timeout=args.lock_timeout,
                stage_timeout=args.stage_timeout,
            ),
            indent=2,
        )
    )


if __name__ == "__main__":
    sys.exit(main())
