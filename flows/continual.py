"""Prefect flow `continual-update`: new experiences from `data/incoming/` update the model.

1. intake: each `data/incoming/*.parquet` is validated against the current stream;
   good files move into `data/experiences/` (a DVC dependency of `prepare`), bad
   ones into `data/incoming/rejected/` with a `.reason.txt`;
2. the stages that lead to the model rerun through DVC: `prepare` appends the new
   experiences, `tame` continues from its checkpoint, `register` logs a new
   version of the model and promotes it only if it is better.
With `update.compare_retrain: true`, TAME is then also retrained from scratch on all
the data in a DVC experiment (`tame.resume=false`, workspace untouched), and both
costs (seconds) and accuracies go to the MLflow run and the Prefect artifact.
Accepted files stay pending (`.clflow/pending-update.json`) until those stages all
succeed, so a failed update is finished by the next run even when nothing new
arrived. Nothing runs when no file arrived and none is pending. Run: `python flows/continual.py
--help`.
"""

from __future__ import annotations

import clflow.ops.quiet  # noqa: F401  (first: Prefect reads its settings when imported)

# isort: split
import json
import sys
from pathlib import Path

from prefect import flow, get_run_logger, task

from clflow.config import load_params
from clflow.ops.artifacts import publish
from clflow.ops.flowcli import flow_main, flow_parser, flow_settings, start_flow_cli
from clflow.ops.tasks import push_outs, run_stage
from clflow.reporting import read_metrics
from clflow.streams import load_stream
from clflow.streams.intake import Intake, intake, pending, set_pending
from clflow.streams.intake import wait_for_files as wait_for_incoming
from clflow.tracking.runs import pipeline_run
from clflow.util.locks import project_lock

UPDATE_STAGES = ["prepare", "embed_classes", "tame", "register"]


@task(name="intake")
def intake_files(project: Path) -> Intake:
    """Validate and accept (or move aside) every incoming experience file."""
    params = load_params(project / "params.yaml")
    stream = load_stream(project / "data" / "stream")
    text = None
    if stream.is_text:  # documents in: embedded now (and cached, so prepare encodes none again)
        from clflow.sentence import CACHE_DIR, EmbeddingCache
        from clflow.streams.experience import TextInput

        cache = EmbeddingCache(params.lingo.encoder_path, project / CACHE_DIR)
        text = TextInput(params.stream.max_text_chars, cache.embed)
    return intake(
        project / "data" / "incoming",
        project / "data" / "experiences",
        stream,
        test_size=params.stream.test_size,
        seed=params.stream.seed,
        duplicates=params.stream.duplicates,
        text=text,
    )


@flow(name="continual-update")
def continual_update(
    project: str = ".",
    stages: list[str] | None = None,
    lock_timeout: float = 600.0,
    stage_timeout: float | None = None,
    wait_for_files: float = 0.0,
) -> dict:
    """Take in new experience files, update TAME incrementally and register the new model.

    `wait_for_files`: seconds to wait for a file when none is in `data/incoming/`, as a run
    started by a `clflow.drift.detected` event does (its labels come after the event)."""
    logger = get_run_logger()
    root = Path(project).resolve()
    stages, timeouts = flow_settings(root, stages or UPDATE_STAGES, stage_timeout)
    params = load_params(root / "params.yaml")
    if params.update.compare_retrain:
        check_retrain_possible(root)  # before anything is taken in or trained
    if wait_for_files > 0 and not pending(root):  # before the lock: others may run meanwhile
        logger.info("waiting up to %.0f s for a file in data/incoming/", wait_for_files)
        arrived = wait_for_incoming(root / "data" / "incoming", wait_for_files)
        logger.info("arrived: %s", ", ".join(arrived) or "nothing")
    with project_lock(root, lock_timeout):
        if not (root / "data" / "stream").exists():  # first run: the stream files must match
            run_stage("prepare", str(root), {}, timeouts["prepare"])
        owed = pending(root)  # checked before intake moves any file
        report = intake_files(root)
        for name, reason in report.rejected.items():
            logger.warning("rejected %s: %s", name, reason)
        if report.waiting:
            logger.info("left for the next run (modified just now): %s", ", ".join(report.waiting))
        if owed:
            logger.info("finishing an earlier update: %s", ", ".join(owed))
        done, env, retrain, pushed = {}, {}, {}, ""
        if report.accepted or owed:  # else nothing to train: no MLflow run either
            with pipeline_run(root) as env:
                set_pending(root, owed + report.accepted)  # a failing stage leaves them owed
                done = {s: run_stage(s, str(root), env, timeouts[s]) for s in stages}
                set_pending(root, [])
                if done.get("tame") == "ran" and params.update.compare_retrain:
                    retrain = compare_retrain(root, env, timeouts["tame"])
            pushed = push_outs(str(root))
        metrics = read_metrics(root / "metrics")
        result = {
            "accepted": report.accepted,
            "rejected": report.rejected,
            "waiting": report.waiting,
            "stages": done,
            "trained": owed + report.accepted,
            "register": metrics.get("register", {}) if done else {},
            "compare_retrain": retrain,
            "pushed": pushed,
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
            f"`{json.dumps(result['register'])}`"
            + retrain_markdown(retrain)
            + (f"\n\n{pushed}." if pushed else ""),
        )
    logger.info(
        "continual update: %s", json.dumps({k: v for k, v in result.items() if k != "stages"})
    )
    return result


def compare_retrain(root: Path, env: dict[str, str], timeout: float) -> dict[str, float | str]:
    """Retrain TAME from scratch on all data in a DVC experiment; the update's cost and accuracy
    beside the retrain's, also logged to the update's MLflow run."""
    from clflow.ops.dvcrun import experiment_metrics
    from clflow.ops.tasks import run_experiment
    from clflow.tracking.runs import log_to_parent, stage_seconds

    # `++`: set the key even where params.yaml predates it (Hydra's force-add, as `dvc exp -S`);
    # --single-item: the stream as dvc.lock has it (accepted files need not be in git)
    name = run_experiment(
        str(root), {"++tame.resume": False}, None, env, ["tame"], timeout, single_item=True
    )
    update = read_metrics(root / "metrics")["tame"]
    scratch = experiment_metrics(root, name)["tame"]
    seconds = stage_seconds(env, "tame", "tame.resume")  # both tame runs of this update
    found = {
        "incremental_seconds": seconds["True"],
        "retrain_seconds": seconds["False"],
        "incremental_avg_accuracy": update["avg_accuracy"],
        "retrain_avg_accuracy": scratch["avg_accuracy"],
        "retrain_experiences": scratch["experiences"],
    }
    log_to_parent(env, {f"update.{k}": v for k, v in found.items()}, {"update.retrain_exp": name})
    return {**found, "experiment": name}


def check_retrain_possible(root: Path) -> None:
    """compare_retrain runs a DVC experiment, which starts from a git commit: stop before the
    update when dvc.lock is not committed (the experiment would find no outs to start from)."""
    import subprocess

    from clflow.errors import ClflowError

    tracked = subprocess.run(
        ["git", "ls-files", "--error-unmatch", "dvc.lock"], cwd=root, capture_output=True
    )
    if tracked.returncode != 0:
        raise ClflowError(
            "update.compare_retrain runs a DVC experiment, which starts from a git commit: "
            "commit dvc.lock (git add dvc.lock && git commit) first",
            file=root / "dvc.lock",
            field="update.compare_retrain",
        )


def retrain_markdown(found: dict) -> str:
    """The artifact's table: continual update against a retrain from scratch."""
    if not found:
        return ""
    return (
        f"\n\n| TAME | seconds | avg accuracy |\n|---|---|---|\n"
        f"| continual update | {found['incremental_seconds']:.1f} | "
        f"{found['incremental_avg_accuracy']:.3f} |\n"
        f"| retrain from scratch (`dvc exp` {found['experiment']}) | "
        f"{found['retrain_seconds']:.1f} | {found['retrain_avg_accuracy']:.3f} |"
    )


@flow_main
def main(argv: list[str] | None = None) -> None:
    from clflow.ops.entry import wait_seconds

    parser = flow_parser(__doc__)
    parser.add_argument(
        "--wait-for-files",
        type=wait_seconds,
        default=0.0,
        help="seconds to wait for a file when data/incoming/ has none (default 0)",
    )
    args = start_flow_cli(parser, argv)
    print(
        json.dumps(
            continual_update(
                project=args.project,
                lock_timeout=args.lock_timeout,
                stage_timeout=args.stage_timeout,
                wait_for_files=args.wait_for_files,
            ),
            indent=2,
        )
    )


if __name__ == "__main__":
    sys.exit(main())
