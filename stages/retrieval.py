"""DVC stage `retrieval`: a FAISS demonstration bank and its three uses, each against the model
alone.

1. retrieval-augmented prediction (finetune and replay, with / without the k-NN vote);
2. few-shot: the last experience's classes held out, predicted from n demonstrations each;
3. retrieval replay: rehearse the nearest stored samples instead of random ones (same memory).
"""

from __future__ import annotations

import logging
from dataclasses import replace

import numpy as np

from clflow.config import RetrievalConfig, TrainConfig, load_params
from clflow.errors import cli_errors
from clflow.evaluation import run_seeds, run_stream
from clflow.io import StagedOuts, write_json
from clflow.learners import learner_for_method, learner_from_config
from clflow.metrics import mean_std
from clflow.plugins import ReplayPlugin
from clflow.retrieval import BankConfig
from clflow.retrieval.replay import RetrievalReplayPlugin
from clflow.retrieval.uses import augmented_run, build_bank, few_shot
from clflow.stage import stage_args
from clflow.streams import Stream, load_stream

log = logging.getLogger("clflow.retrieval")
REPLAYS = {
    "random": lambda memory, seed: ReplayPlugin(memory, seed=seed),
    "nearest": lambda memory, seed: RetrievalReplayPlugin(memory, seed=seed, other_classes=False),
    "nearest_other_class": lambda memory, seed: RetrievalReplayPlugin(memory, seed=seed),
}


def augmented(
    stream: Stream, train: TrainConfig, memory: int, cfg: RetrievalConfig, bank: BankConfig
) -> dict:
    out = {}
    for method in ("finetune", "replay"):
        alone, blended = [], []
        for seed in train.seeds:
            learner = learner_for_method(method, stream, train, seed, memory)
            a, w = augmented_run(
                learner,
                stream,
                batch_size=train.batch_size,
                epochs=train.epochs,
                seed=seed,
                k=cfg.k,
                weight=cfg.weight,
                config=bank,
                embed_with_model=cfg.embedding == "model",
            )
            alone.append(a.metrics())
            blended.append(w.metrics())
        out[method] = {"alone": mean_std(alone), "with_retrieval": mean_std(blended)}
    return out


def replay_variants(stream: Stream, train: TrainConfig, memory: int) -> dict:
    def learner(make, seed: int):
        return learner_from_config(stream, train, seed, [make(memory, seed)])

    return {
        name: mean_std(
            [
                r.metrics()
                for _, r in run_seeds(lambda seed: learner(make, seed), stream, train, desc=name)
            ]
        )
        for name, make in REPLAYS.items()
    }


def embedder(
    stream: Stream, train: TrainConfig, cfg: RetrievalConfig, memory: int, held_out: np.ndarray
):
    """Raw features, or the penultimate features of a replay learner trained without the held-out
    classes."""
    if cfg.embedding == "raw":
        return lambda X: X
    learner = learner_for_method("replay", stream, train, train.seeds[0], memory)
    keep = ~np.isin(stream.train.y, held_out)
    run_stream(
        learner,
        replace(
            stream,
            train=stream.train.select(keep),
            test=stream.test.select(~np.isin(stream.test.y, held_out)),
        ),
        batch_size=train.batch_size,
        epochs=train.epochs,
        seed=train.seeds[0],
    )
    return learner.features


@cli_errors
def main(argv: list[str] | None = None) -> None:
    args = stage_args(
        __doc__,
        "`train`, `baselines.memory`, `retrieval`, `tracking`",
        argv,
        stream="data/stream",
        bank="models/retrieval/bank",
        metrics="metrics/retrieval.json",
    )
    with StagedOuts(args.bank, args.metrics) as outs:  # all change, or none
        params = load_params(args.params)
        cfg, train, memory = params.retrieval, params.train, params.baselines.memory
        stream = load_stream(args.stream)
        bank_cfg = BankConfig(metric=cfg.metric, index=cfg.index)
        held_out = np.unique(stream.train.y[stream.train.experience == stream.n_experiences - 1])

        embed = embedder(stream, train, cfg, memory, held_out)
        metrics = {
            "augmented": augmented(stream, train, memory, cfg, bank_cfg),
            "fewshot": {
                "held_out_classes": [stream.classes[c] for c in held_out],
                **few_shot(
                    stream, embed, held_out, cfg.shots, cfg.k, bank_cfg, seed=train.seeds[0]
                ),
            },
            "retrieval_replay": replay_variants(stream, train, memory),
        }
        tr = stream.train
        bank = build_bank(
            tr.X,
            tr.y,
            embed,
            bank_cfg,
            {"experience": tr.experience, "row": np.arange(len(tr.y), dtype=np.int64)},
        )
        bank.save(outs[args.bank])
        metrics["bank"] = {"size": len(bank), "dim": bank.dim, "index": bank.kind}
        write_json(outs[args.metrics], metrics)
        for method, v in metrics["augmented"].items():
            log.info(
                "%-8s avg_accuracy alone %.3f, with retrieval %.3f",
                method,
                v["alone"]["avg_accuracy"],
                v["with_retrieval"]["avg_accuracy"],
            )

        import mlflow

        from clflow.tracking import flatten, stage_run

        sections = {
            "train": train.model_dump(),
            "retrieval": cfg.model_dump(),
            "baselines.memory": memory,
        }
        with stage_run("retrieval", sections, params.tracking.experiment):
            mlflow.log_metrics(
                {k: v for k, v in flatten(metrics).items() if isinstance(v, (int, float))}
            )
            mlflow.log_artifacts(outs[args.bank], "bank")


if __name__ == "__main__":
    main()
