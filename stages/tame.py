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

from clflow.config import TameConfig, TrainConfig, load_params
from clflow.errors import cli_errors
from clflow.evaluation import RunResult, run_stream, untrained_accuracies
from clflow.io import StagedOuts, atomic_path, write_json
from clflow.learners import learner_from_config
from clflow.lingo.targets import read_targets
from clflow.metrics import mean_std, shift_points
from clflow.plots import accuracy_heatmap, loss_with_boundaries
from clflow.stage import stage_args
from clflow.streams import Stream, load_stream
from clflow.tame import TameLearner, evaluate, incremental
from clflow.tame.persist import restore, save_tame

log = logging.getLogger("clflow.tame")


def make_tame(
    stream: Stream,
    train: TrainConfig,
    cfg: TameConfig,
    seed: int,
    targets: np.ndarray | None = None,
) -> TameLearner:
    """TAME whose experts clone the `train` learner (with language targets when tame.head is
    lingo)."""
    expert = learner_from_config(stream, train, seed, targets=targets)
    hyper = cfg.model_dump(exclude={"match_tolerance", "head", "resume"})
    return TameLearner(expert, seed=seed, **hyper)


def train_seed(
    stream: Stream,
    train: TrainConfig,
    cfg: TameConfig,
    seed: int,
    ckpt_path: Path,
    save_to: Path,
    targets: np.ndarray | None = None,
) -> tuple[TameLearner, RunResult, int]:
    """Train (or continue from `ckpt_path`) one seed and save it to `save_to`; returns the learner,
    its full result and where it resumed."""
    fp = incremental.fingerprint(
        {
            "train": train.model_dump(),
            "tame": cfg.model_dump(exclude={"resume"}),  # a retrain can be continued later
            "seed": seed,
            "targets": None if targets is None else targets.round(6).tolist(),
        },
        stream,
    )
    start, ckpt = incremental.resume_point(ckpt_path, stream, fp) if cfg.resume else (0, None)
    learner = make_tame(stream, train, cfg, seed, targets)
    run = dict(
        batch_size=train.batch_size, epochs=train.epochs, seed=seed, desc=f"tame seed {seed}"
    )
    if ckpt is None:
        result = run_stream(learner, stream, **run)
    else:
        restore(ckpt, ckpt_path, learner)
        result = incremental.merge(ckpt, run_stream(learner, stream, start=start, **run))
        result.b = untrained_accuracies(make_tame(stream, train, cfg, seed, targets), stream)
    save_tame(
        save_to,
        learner,
        fingerprint=fp,
        experiences=stream.n_experiences,
        rows_hash=incremental.consumed_hash(stream, stream.n_experiences),
        R=result.R,
        batch_experience=result.batch_experience,
        classes=stream.classes,
    )
    return learner, result, start


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
        runs, learners, resumed = [], [], []
        t0 = time.monotonic()
        for seed in params.train.seeds:
            learner, result, start = train_seed(
                stream,
                params.train,
                params.tame,
                seed,
                Path(args.models) / f"seed_{seed}.pt",
                outs[args.models] / f"seed_{seed}.pt",
                targets,
            )
            scores = evaluate.tame_scores(
                learner, stream, result.batch_experience, params.tame.match_tolerance
            )
            runs.append({**result.metrics(), **scores})
            learners.append((learner, result))
            resumed.append(start)
        # the cost of this run, all seeds: logged to MLflow only (metrics files are a function of
        # the inputs, so an unchanged run leaves them byte-identical)
        seconds = time.monotonic() - t0
        metrics = {
            **mean_std(runs),
            "resumed_from_experience": float(min(resumed)),
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

        import mlflow

        from clflow.tracking import log_curves, stage_run

        with stage_run(
            "tame",
            {"train": params.train.model_dump(), "tame": params.tame.model_dump()},
            params.tracking.experiment,
        ):
            mlflow.log_metrics({**metrics, "train_seconds": seconds})
            first, result = learners[0]  # the first seed: R per experience, loss per batch
            log_curves(result.R, loss=first.log_.loss)
            mlflow.log_dict(
                {"R": [np.where(np.isnan(r.R), None, r.R).tolist() for _, r in learners]},
                "accuracy.json",
            )
            mlflow.log_artifacts(outs[args.plots], "plots")


if __name__ == "__main__":
    main()
