"""DVC stage `retrieval`: a FAISS demonstration bank and its three uses, each against the model
alone.

1. retrieval-augmented prediction (finetune and replay, with / without the k-NN vote);
2. few-shot: the last experience's classes held out, predicted from n demonstrations each;
3. retrieval replay: rehearse the nearest stored samples instead of random ones (same memory).
"""

from __future__ import annotations

import logging

from clflow.errors import cli_errors
from clflow.ops.entry import StageCommand

log = logging.getLogger("clflow.retrieval")
STAGE = StageCommand(
    "retrieval",
    __doc__,
    "`train`, `baselines.memory`, `retrieval`, `tracking`",
    {
        "stream": "data/stream",
        "bank": "models/retrieval/bank",
        "metrics": "metrics/retrieval.json",
        "predictions": "models/baselines/predictions.npz",
    },
    outs=("bank", "metrics"),
)


@cli_errors
def main(argv: list[str] | None = None) -> None:
    with STAGE.run(argv) as st:
        # the library loads once the command line is read: `--help` needs no torch or FAISS
        import mlflow
        import numpy as np

        from clflow.baselines.predictions import load_predictions
        from clflow.retrieval import BankConfig
        from clflow.retrieval.evaluate import augmented, embedder, replay_variants
        from clflow.retrieval.uses import build_bank, few_shot
        from clflow.tracking.runs import flatten
        from clflow.util.io import write_json

        params, stream = st.params, st.stream
        cfg, train, memory = params.retrieval, params.train, params.baselines.memory
        bank_cfg = BankConfig(metric=cfg.metric, index=cfg.index)
        held_out = np.unique(stream.train.y[stream.train.experience == stream.n_experiences - 1])
        # live while the learners train: their progress
        with st.tracked("train", "retrieval", **{"baselines.memory": memory}):
            predictions = load_predictions(st.args.predictions, stream)
            embed = embedder(stream, train, cfg, memory, held_out)
            shots = few_shot(stream, embed, held_out, cfg.shots, cfg.k, bank_cfg, train.seeds[0])
            metrics = {
                "augmented": augmented(stream, train, memory, cfg, bank_cfg, predictions),
                "fewshot": {"held_out_classes": [stream.classes[c] for c in held_out], **shots},
                "retrieval_replay": replay_variants(stream, train, memory, predictions),
            }
            tr = stream.train
            rows = {"experience": tr.experience, "row": np.arange(len(tr.y), dtype=np.int64)}
            if stream.is_text:  # demonstrations a person can read: `clflow retrieve --text`
                rows["text"] = tr.text
            bank = build_bank(tr.X, tr.y, embed, bank_cfg, rows)
            bank.save(st.outs["bank"])
            metrics["bank"] = {"size": len(bank), "dim": bank.dim, "index": bank.kind,
                               "memory_rows": len(bank), "memory_bytes": bank.nbytes}  # fmt: skip
            write_json(st.outs["metrics"], metrics)
            for method, v in metrics["augmented"].items():
                log.info(
                    "%-8s avg_accuracy alone %.3f, with retrieval %.3f",
                    method,
                    v["alone"]["avg_accuracy"],
                    v["with_retrieval"]["avg_accuracy"],
                )
            numbers = {k: v for k, v in flatten(metrics).items() if isinstance(v, (int, float))}
            mlflow.log_metrics(numbers)
            mlflow.log_artifacts(st.outs["bank"], "bank")


if __name__ == "__main__":
    main()
