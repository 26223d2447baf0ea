"""DVC stage `lingo`: one-hot head vs frozen random targets vs language targets (LingoCL).

Every head scores only the classes seen so far (a growing head), so the head is
the only difference. Random targets separate "frozen targets" from "language".
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import polars as pl

from clflow.config import load_params
from clflow.errors import cli_errors
from clflow.evaluation import RunResult
from clflow.lingo.compare import compare
from clflow.lingo.targets import read_targets
from clflow.metrics import mean_std
from clflow.ops.entry import stage_args
from clflow.ops.io import StagedOuts, atomic_path, write_json
from clflow.plots import accuracy_curves, seen_accuracy
from clflow.streams import load_stream
from clflow.tracking.runs import flatten, stage_run

log = logging.getLogger("clflow.lingo")


def write_plots(results: dict[str, dict[str, list[RunResult]]], plots: Path) -> None:
    plots.mkdir(parents=True, exist_ok=True)
    table = {}
    for method, heads in results.items():
        curves = {}
        for head, runs in heads.items():
            seen = np.array([seen_accuracy(r.R) for r in runs])
            curves[head] = (seen.mean(0), seen.std(0))
            table[f"{method}_{head}"] = np.round(seen.mean(0), 4)
        accuracy_curves(
            curves, f"{method}: accuracy after each experience, per head", plots / f"{method}.png"
        )
    with atomic_path(plots / "accuracy.csv") as tmp:
        pl.DataFrame({"experience": np.arange(len(next(iter(table.values())))), **table}).write_csv(
            tmp
        )


@cli_errors
def main(argv: list[str] | None = None) -> None:
    args = stage_args(
        __doc__,
        "`train`, `baselines.memory`, `lingo.heads`, `lingo.methods`",
        argv,
        stream="data/stream",
        targets="data/class_targets.parquet",
        metrics="metrics/lingo.json",
        plots="plots/lingo",
    )
    with StagedOuts(args.metrics, args.plots) as outs:  # all change, or none
        params = load_params(args.params)
        stream = load_stream(args.stream)
        language = read_targets(args.targets, stream.classes)
        sections = {"train": params.train.model_dump(), "lingo": params.lingo.model_dump()}
        # the MLflow run is live while the learners train: it shows their `progress`
        with stage_run("lingo", sections, params.tracking.experiment):
            results = compare(stream, language, params.train, params.lingo, params.baselines.memory)
            metrics = {
                m: {h: mean_std([r.metrics() for r in runs]) for h, runs in heads.items()}
                for m, heads in results.items()
            }
            write_plots(results, Path(outs[args.plots]))
            write_json(outs[args.metrics], metrics)
            for m, heads in metrics.items():
                for h, v in heads.items():
                    log.info(
                        "%-8s %-8s avg_accuracy %.3f ± %.3f forgetting %.3f",
                        m,
                        h,
                        v["avg_accuracy"],
                        v["avg_accuracy_std"],
                        v["forgetting"],
                    )
            import mlflow

            mlflow.log_metrics(flatten(metrics))
            mlflow.log_artifacts(outs[args.plots], "plots")


if __name__ == "__main__":
    main()
