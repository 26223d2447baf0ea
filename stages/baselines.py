"""DVC stage `baselines`: finetune, replays (ER, ER-ACE, DER++), GDumb and joint on the same
stream and seeds, each memory-bounded method at `baselines.memory` rows (reported in the metrics).

Also writes every run's test probabilities (models/baselines/predictions.npz), which the
`retrieval` stage blends with its k-NN vote instead of training the same learners again.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import polars as pl

from clflow.config import BaselinesConfig, TrainConfig, load_params
from clflow.errors import cli_errors
from clflow.evaluation import RunResult, run_methods
from clflow.learners import ContinualLearner, memory_report
from clflow.methods import learner_for_method
from clflow.metrics import mean_std
from clflow.ops.entry import stage_args
from clflow.ops.io import StagedOuts, atomic_path, write_json
from clflow.plots import accuracy_curves, accuracy_heatmap, seen_accuracy
from clflow.predictions import save_predictions
from clflow.streams import Stream, load_stream
from clflow.tracking.runs import log_curves, log_torch_model, stage_run

log = logging.getLogger("clflow.baselines")


def run_methods_all_seeds(
    stream: Stream, train: TrainConfig, cfg: BaselinesConfig
) -> tuple[dict[str, list[RunResult]], dict[str, list[ContinualLearner]]]:
    """Every method and seed; returns the results and the trained learners per method."""
    makers = {
        method: lambda seed, method=method: learner_for_method(
            method, stream, train, seed, cfg.memory, cfg
        )
        for method in cfg.methods
    }
    runs = run_methods(
        makers, stream, train, cumulative=["joint"], desc="baselines", keep_proba=True
    )
    results = {m: [r for _, r in runs[m]] for m in cfg.methods}
    learners = {m: [learner for learner, _ in runs[m]] for m in cfg.methods}
    return results, learners  # type: ignore[return-value]


def stored(learners: list[ContinualLearner]) -> dict[str, int]:
    """The most rows and bytes any seed's learner holds from the stream (its memory)."""
    reports = [memory_report(learner) for learner in learners]
    return {k: max(r[k] for r in reports) for k in reports[0]}


def write_plots(results: dict[str, list[RunResult]], plots: Path) -> None:
    """Heatmap per method, accuracy-on-seen curves (PNG) and their numbers (CSV, a DVC plot)."""
    plots.mkdir(parents=True, exist_ok=True)
    curves = {}
    for method, runs in results.items():
        R = np.mean([r.R for r in runs], axis=0)
        accuracy_heatmap(
            R,
            f"{method}: accuracy matrix (mean of {len(runs)} seeds)",
            plots / f"matrix_{method}.png",
        )
        seen = np.array([seen_accuracy(r.R) for r in runs])
        curves[method] = (seen.mean(0), seen.std(0))
    accuracy_curves(curves, "Accuracy on seen experiences", plots / "accuracy.png")
    T = len(next(iter(curves.values()))[0])
    table = pl.DataFrame(
        {"experience": np.arange(T), **{m: np.round(c[0], 4) for m, c in curves.items()}}
    )
    with atomic_path(plots / "accuracy.csv") as tmp:
        table.write_csv(tmp)


@cli_errors
def main(argv: list[str] | None = None) -> None:
    args = stage_args(
        __doc__,
        "`train`, `baselines`, `tracking`",
        argv,
        stream="data/stream",
        metrics="metrics/baselines.json",
        plots="plots/baselines",
        predictions="models/baselines/predictions.npz",
    )

    with StagedOuts(args.metrics, args.plots, args.predictions) as outs:  # all change, or none
        params = load_params(args.params)
        stream = load_stream(args.stream)
        sections = {"train": params.train.model_dump(), "baselines": params.baselines.model_dump()}
        # the MLflow run is live while the learners train: it shows their `progress`
        with stage_run("baselines", sections, params.tracking.experiment):
            results, learners = run_methods_all_seeds(stream, params.train, params.baselines)
            metrics = {
                m: {**mean_std([r.metrics() for r in runs]), **stored(learners[m])}
                for m, runs in results.items()
            }
            write_plots(results, Path(outs[args.plots]))
            write_json(outs[args.metrics], metrics)
            predictions = {
                m: {seed: r.proba for seed, r in zip(params.train.seeds, runs)}
                for m, runs in results.items()
            }
            save_predictions(outs[args.predictions], predictions, stream)  # for `retrieval`
            for m, v in metrics.items():
                log.info(
                    "%-13s avg_accuracy %.3f ± %.3f  forgetting %.3f  memory %d rows, %d bytes",
                    m,
                    v["avg_accuracy"],
                    v["avg_accuracy_std"],
                    v["forgetting"],
                    v["memory_rows"],
                    v["memory_bytes"],
                )
            first = {m: seeds[0] for m, seeds in learners.items()}
            log_results(results, metrics, first, Path(outs[args.plots]), stream)


def log_results(
    results: dict[str, list[RunResult]],
    metrics: dict[str, dict],
    learners: dict[str, ContinualLearner],
    plots: Path,
    stream: Stream,
) -> None:
    """Metrics, each method's first-seed curves and model, and the plots, to the live run."""
    import mlflow

    mlflow.log_metrics({f"{m}.{k}": v for m, vals in metrics.items() for k, v in vals.items()})
    for m, runs in results.items():  # curves of the first seed, one step per experience
        log_curves(runs[0].R, prefix=f"{m}.")
    mlflow.log_dict(
        {m: [r.R.tolist() for r in runs] for m, runs in results.items()},
        "accuracy_matrices.json",
    )
    mlflow.log_artifacts(plots, "plots")
    for m, learner in learners.items():
        log_torch_model(learner.model_, m, stream.test.X[:2])


if __name__ == "__main__":
    main()
