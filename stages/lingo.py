"""DVC stage `lingo`: one-hot head vs frozen random targets vs language targets (LingoCL).

Every head scores only the classes seen so far (a growing head), so the head is
the only difference. Random targets separate "frozen targets" from "language".
"""

from __future__ import annotations

import logging

from clflow.errors import cli_errors
from clflow.ops.entry import StageCommand

log = logging.getLogger("clflow.lingo")
STAGE = StageCommand(
    "lingo",
    __doc__,
    "`train`, `baselines.memory`, `lingo.heads`, `lingo.methods`",
    {
        "stream": "data/stream",
        "targets": "data/class_targets.parquet",
        "metrics": "metrics/lingo.json",
        "plots": "plots/lingo",
    },
    outs=("metrics", "plots"),
)


@cli_errors
def main(argv: list[str] | None = None) -> None:
    with STAGE.run(argv) as st:
        # the library loads once the command line is read: `--help` needs no torch
        import mlflow

        from clflow.lingo.compare import compare, head_metrics, names_alone
        from clflow.lingo.targets import read_targets
        from clflow.plots import seen_accuracy_plots
        from clflow.tracking.runs import flatten
        from clflow.util.io import write_json

        params, stream = st.params, st.stream
        language = read_targets(st.args.targets, stream.classes)
        with st.tracked("train", "lingo"):  # live while the learners train: their progress
            results = compare(stream, language, params.train, params.lingo, params.baselines.memory)
            metrics: dict = head_metrics(results)
            seen_accuracy_plots(
                {
                    m: {h: [r.R for r in runs] for h, runs in heads.items()}
                    for m, heads in results.items()
                },
                "{}: accuracy after each experience, per head",
                st.outs["plots"],
            )
            for m, heads in metrics.items():
                for h, v in heads.items():
                    log.info(
                        "%-8s %-8s avg_accuracy %.3f ± %.3f forgetting %.3f zero_shot %.3f",
                        m,
                        h,
                        v["avg_accuracy"],
                        v["avg_accuracy_std"],
                        v["forgetting"],
                        v["zero_shot"],
                    )
            baseline = names_alone(stream, language)  # text streams: the names with no training
            if baseline:
                metrics["names"] = baseline
            write_json(st.outs["metrics"], metrics)
            mlflow.log_metrics(flatten(metrics))
            mlflow.log_artifacts(st.outs["plots"], "plots")


if __name__ == "__main__":
    main()
