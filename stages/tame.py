"""DVC stage `tame`: task-agnostic continual learning with multiple experts.

Trains TAME on the task-label-free stream for every seed, continuing from the
persisted checkpoint when the stream only gained experiences.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from clflow.errors import cli_errors
from clflow.ops.entry import StageCommand

log = logging.getLogger("clflow.tame")
STAGE = StageCommand(
    "tame",
    __doc__,
    "`train`, `tame`, `tracking`",
    {
        "stream": "data/stream",
        "models": "models/tame",
        "metrics": "metrics/tame.json",
        "plots": "plots/tame",
        "targets": "data/class_targets.parquet",
    },
    outs=("models", "metrics", "plots"),
)


@cli_errors
def main(argv: list[str] | None = None) -> None:
    with STAGE.run(argv) as st:
        # the library loads once the command line is read: `--help` needs no torch
        from clflow.lingo.targets import read_targets
        from clflow.metrics import mean_std
        from clflow.tame.evaluate import write_plots
        from clflow.tame.training import train_seeds
        from clflow.util.io import write_json

        params, stream = st.params, st.stream
        lingo = params.tame.head == "lingo"
        targets = read_targets(st.args.targets, stream.classes) if lingo else None
        with st.tracked("train", "tame"):  # live while the seeds train: their progress
            t0 = time.monotonic()
            done = train_seeds(
                stream, params.train, params.tame, Path(st.args.models), st.outs["models"], targets
            )
            # the cost of this run, all seeds: logged to MLflow only (metrics files are a
            # function of the inputs, so an unchanged run leaves them byte-identical)
            seconds = time.monotonic() - t0
            metrics = {
                **mean_std([scores for *_, scores in done]),
                "resumed_from_experience": float(min(start for _, _, start, _ in done)),
                "experiences": float(stream.n_experiences),
            }
            first, result, *_ = done[0]
            write_plots(first, result, stream, st.outs["plots"])
            write_json(st.outs["metrics"], metrics)
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
            log_results(metrics, seconds, done, st.outs["plots"])


def log_results(metrics: dict, seconds: float, done: list, plots: Path) -> None:
    """Metrics, the first seed's curves (R per experience, loss per batch) and the plots."""
    import mlflow
    import numpy as np

    from clflow.tracking.runs import log_curves

    mlflow.log_metrics({**metrics, "train_seconds": seconds})
    first, result, *_ = done[0]
    log_curves(result.R, loss=first.log_.loss)
    mlflow.log_dict(
        {"R": [np.where(np.isnan(r.R), None, r.R).tolist() for _, r, *_ in done]},
        "accuracy.json",
    )
    # tame.selector_backbone auto: each seed's choices of the selector network, with the
    # held-out routing that made them
    mlflow.log_dict([learner.router_.choices_ for learner, *_ in done], "selector_choices.json")
    mlflow.log_artifacts(plots, "plots")


if __name__ == "__main__":
    main()
