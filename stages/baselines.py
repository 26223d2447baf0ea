"""DVC stage `baselines`: finetune, replays (ER, ER-ACE, DER++), GDumb and joint on the same
stream and seeds, each memory-bounded method at `baselines.memory` rows (reported in the metrics).

Also writes every run's test probabilities (models/baselines/predictions.npz), which the
`retrieval` stage blends with its k-NN vote instead of training the same learners again.
"""

from __future__ import annotations

import logging

from clflow.errors import cli_errors
from clflow.ops.entry import StageCommand

log = logging.getLogger("clflow.baselines")
STAGE = StageCommand(
    "baselines",
    __doc__,
    "`train`, `baselines`, `tracking`",
    {
        "stream": "data/stream",
        "metrics": "metrics/baselines.json",
        "plots": "plots/baselines",
        "predictions": "models/baselines/predictions.npz",
    },
    outs=("metrics", "plots", "predictions"),
)


@cli_errors
def main(argv: list[str] | None = None) -> None:
    with STAGE.run(argv) as st:
        # the library loads once the command line is read: `--help` needs no torch
        from clflow.baselines.methods import run_baselines
        from clflow.baselines.predictions import save_predictions
        from clflow.evaluation import most_memory
        from clflow.metrics import mean_std
        from clflow.plots import method_plots
        from clflow.util.io import write_json

        params, stream = st.params, st.stream
        with st.tracked("train", "baselines"):  # live while the learners train: their progress
            runs = run_baselines(stream, params.train, params.baselines)
            metrics = {
                m: {
                    **mean_std([r.metrics() for _, r in seeds]),
                    **most_memory([result for _, result in seeds]),
                }
                for m, seeds in runs.items()
            }
            method_plots(
                {m: [r.R for _, r in seeds] for m, seeds in runs.items()}, st.outs["plots"]
            )
            write_json(st.outs["metrics"], metrics)
            predictions = {
                m: {seed: r.proba for seed, (_, r) in zip(params.train.seeds, seeds)}
                for m, seeds in runs.items()
            }
            save_predictions(st.outs["predictions"], predictions, stream)  # for `retrieval`
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
            log_results(runs, metrics, st)


def log_results(runs: dict, metrics: dict[str, dict], st) -> None:
    """Metrics, each method's first-seed curves and model, and the plots, to the live run."""
    import mlflow

    from clflow.tracking.runs import log_curves, log_torch_model

    # the models first: MLflow copies every step-0 metric the run has to each model it logs
    # (one query per metric name), which was a third of this stage's logging
    model_ids = {m: log_torch_model(seeds[0][0].model_, m, st.stream.test.X[:2])
                 for m, seeds in runs.items()}  # fmt: skip
    for m, vals in metrics.items():  # each method's numbers, linked to its own model
        mlflow.log_metrics({f"{m}.{k}": v for k, v in vals.items()}, model_id=model_ids.get(m))
    for m, seeds in runs.items():  # curves of the first seed, one step per experience
        log_curves(seeds[0][1].R, prefix=f"{m}.")
    mlflow.log_dict(
        {m: [r.R.tolist() for _, r in seeds] for m, seeds in runs.items()},
        "accuracy_matrices.json",
    )
    mlflow.log_artifacts(st.outs["plots"], "plots")


if __name__ == "__main__":
    main()
