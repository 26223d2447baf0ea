"""DVC stage `tame`: task-agnostic continual learning with multiple experts.

Trains TAME on the task-label-free stream for every seed, continuing from the
persisted checkpoint when the stream only gained experiences.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import polars as pl

from clflow.config import load_params
from clflow.errors import cli_errors
from clflow.evaluation import RunResult
from clflow.lingo.targets import read_targets
from clflow.metrics import mean_std, shift_points
from clflow.ops.entry import stage_args
from clflow.ops.io import StagedOuts, atomic_path, write_json
from clflow.parallel import run_parallel
from clflow.plots import accuracy_heatmap, loss_with_boundaries
from clflow.streams import Stream, load_stream
from clflow.tame import TameLearner, evaluate
from clflow.tame.training import scored, train_seed
from clflow.tracking.runs import log_curves, stage_run

log = logging.getLogger("clflow.tame")


def write_plots(learner: TameLearner, result: RunResult, stream: Stream, plots: Path) -> None:
    plots.mkdir(parents=True, exist_ok=True)
    loss = np.asarray(learner.log_.loss)
    true = shift_points(evaluate.batch_tasks(stream, result.batch_experience))
    loss_with_boundaries(
        loss,
        true,
        learner.detections_,
        "TAME: loss, true (dashed) and detected (red) shifts",
        plots / "loss.png",
    )
    accuracy_heatmap(np.nan_to_num(result.R), "TAME accuracy matrix", plots / "matrix.png")
    with atomic_path(
        plots / "matrix.csv"
    ) as tmp:  # R[i][j]: rows trained through i, columns tested on j
        pl.DataFrame(
            {
                "trained_through": np.arange(len(result.R)),
                **{f"experience_{j}": result.R[:, j] for j in range(result.R.shape[1])},
            }
        ).write_csv(tmp)
    with atomic_path(plots / "loss.csv") as tmp:
        pl.DataFrame(
            {"batch": np.arange(len(loss)), "loss": loss, "expert": learner.log_.expert}
        ).write_csv(tmp)


@cli_errors
def main(argv: list[str] | None = None) -> None:
    args = stage_args(
        __doc__,
        "`train`, `tame`, `tracking`",
        argv,
        stream="data/stream",
        models="models/tame",
        metrics="metrics/tame.json",
        plots="plots/tame",
        targets="data/class_targets.parquet",
    )

    with StagedOuts(args.models, args.metrics, args.plots) as outs:  # all change, or none
        params = load_params(args.params)
        stream = load_stream(args.stream)
        targets = (
            read_targets(args.targets, stream.classes) if params.tame.head == "lingo" else None
        )
        sections = {"train": params.train.model_dump(), "tame": params.tame.model_dump()}
        # the MLflow run is live while the seeds train: it shows their `progress`
        with stage_run("tame", sections, params.tracking.experiment):
            t0 = time.monotonic()
            jobs = [
                lambda seed=seed: scored(
                    train_seed(
                        stream,
                        params.train,
                        params.tame,
                        seed,
                        Path(args.models) / f"seed_{seed}.pt",
                        outs[args.models] / f"seed_{seed}.pt",
                        targets,
                    ),
                    stream,
                    params.tame,
                )
                for seed in params.train.seeds
            ]
            done = run_parallel(jobs, "tame", unit="seeds")
            learners = [(learner, result) for learner, result, _, _ in done]
            # the cost of this run, all seeds: logged to MLflow only (metrics files are a
            # function of the inputs, so an unchanged run leaves them byte-identical)
            seconds = time.monotonic() - t0
            metrics = {
                **mean_std([scores for *_, scores in done]),
                "resumed_from_experience": float(min(start for _, _, start, _ in done)),
                "experiences": float(stream.n_experiences),
            }
            write_plots(*learners[0], stream, Path(outs[args.plots]))
            write_json(outs[args.metrics], metrics)
            log.info(
                "avg_accuracy %.3f ± %.3f  detection_f1 %.3f  experts %.1f  selector %.3f  "
                "non-zero parameters %.0f (one dense expert %.0f)",
                metrics["avg_accuracy"],
                metrics["avg_accuracy_std"],
                metrics["detection_f1"],
                metrics["n_experts"],
                metrics["selector_accuracy"],
                metrics["nonzero_parameters"],
                metrics["dense_expert_parameters"],
            )
            log_results(metrics, seconds, learners, Path(outs[args.plots]))


def log_results(
    metrics: dict, seconds: float, learners: list[tuple[TameLearner, RunResult]], plots: Path
) -> None:
    """Metrics, the first seed's curves (R per experience, loss per batch) and the plots."""
    import mlflow

    mlflow.log_metrics({**metrics, "train_seconds": seconds})
    first, result = learners[0]
    log_curves(result.R, loss=first.log_.loss)
    mlflow.log_dict(
        {"R": [np.where(np.isnan(r.R), None, r.R).tolist() for _, r in learners]},
        "accuracy.json",
    )
    # tame.selector_backbone auto: each seed's choices of the selector network, with the
    # held-out routing that made them
    mlflow.log_dict([learner.selector_choices_ for learner, _ in learners], "selector_choices.json")
    mlflow.log_artifacts(plots, "plots")


if __name__ == "__main__":
    main()
