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
from clflow.evaluation import result_from_proba, run_methods, run_stream
from clflow.learners import learner_from_config
from clflow.methods import learner_for_method
from clflow.metrics import mean_std
from clflow.ops.entry import stage_args
from clflow.ops.io import StagedOuts, write_json
from clflow.plugins import ReplayPlugin
from clflow.predictions import Predictions, load_predictions
from clflow.retrieval import BankConfig
from clflow.retrieval.replay import RetrievalReplayPlugin
from clflow.retrieval.uses import augmented_run, blend, build_bank, experience_votes, few_shot
from clflow.streams import Stream, load_stream
from clflow.tracking.runs import flatten, stage_run

log = logging.getLogger("clflow.retrieval")
REPLAYS = {
    "random": lambda memory, seed: ReplayPlugin(memory, seed=seed),
    "nearest": lambda memory, seed: RetrievalReplayPlugin(memory, seed=seed, other_classes=False),
    "nearest_other_class": lambda memory, seed: RetrievalReplayPlugin(memory, seed=seed),
}


def augmented(
    stream: Stream,
    train: TrainConfig,
    memory: int,
    cfg: RetrievalConfig,
    bank: BankConfig,
    predictions: Predictions,
) -> dict:
    """Finetune and replay alone and blended with the k-NN vote. On raw features the baselines'
    predictions of the same learners are blended (nothing is trained again) when they have them."""
    raw = cfg.embedding == "raw"
    votes = experience_votes(stream, cfg.k, bank) if raw else None
    out = {}
    for method in ("finetune", "replay"):
        kept = predictions.get(method, {})
        if raw and all(seed in kept for seed in train.seeds):
            runs = [
                blend(result_from_proba(kept[seed], stream.test), votes, cfg.weight, stream)
                for seed in train.seeds
            ]
        else:
            runs = [
                augmented_run(
                    learner_for_method(method, stream, train, seed, memory),
                    stream,
                    batch_size=train.batch_size,
                    epochs=train.epochs,
                    seed=seed,
                    k=cfg.k,
                    weight=cfg.weight,
                    config=bank,
                    embed_with_model=not raw,
                    votes=votes,
                )
                for seed in train.seeds
            ]
        out[method] = {
            "alone": mean_std([a.metrics() for a, _ in runs]),
            "with_retrieval": mean_std([w.metrics() for _, w in runs]),
        }
    return out


def replay_variants(
    stream: Stream, train: TrainConfig, memory: int, predictions: Predictions
) -> dict:
    """Random (reservoir) replay against retrieval replay at the same memory; the random one is
    the baselines' `replay_online` when they have it."""
    kept = predictions.get("replay_online", {})
    reuse = {"random"} if all(seed in kept for seed in train.seeds) else set()
    makers = {
        name: lambda seed, make=make: learner_from_config(stream, train, seed, [make(memory, seed)])
        for name, make in REPLAYS.items()
        if name not in reuse
    }
    runs = run_methods(makers, stream, train, desc="retrieval replay") if makers else {}
    results = {name: [r for _, r in runs[name]] for name in makers}
    if reuse:
        results["random"] = [result_from_proba(kept[s], stream.test) for s in train.seeds]
    return {name: mean_std([r.metrics() for r in results[name]]) for name in REPLAYS}


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
        predictions="models/baselines/predictions.npz",
    )
    with StagedOuts(args.bank, args.metrics) as outs:  # all change, or none
        params = load_params(args.params)
        cfg, train, memory = params.retrieval, params.train, params.baselines.memory
        stream = load_stream(args.stream)
        bank_cfg = BankConfig(metric=cfg.metric, index=cfg.index)
        held_out = np.unique(stream.train.y[stream.train.experience == stream.n_experiences - 1])

        sections = {
            "train": train.model_dump(),
            "retrieval": cfg.model_dump(),
            "baselines.memory": memory,
        }
        # the MLflow run is live while the learners train: it shows their `progress`
        with stage_run("retrieval", sections, params.tracking.experiment):
            predictions = load_predictions(args.predictions, stream)
            embed = embedder(stream, train, cfg, memory, held_out)
            metrics = {
                "augmented": augmented(stream, train, memory, cfg, bank_cfg, predictions),
                "fewshot": {
                    "held_out_classes": [stream.classes[c] for c in held_out],
                    **few_shot(
                        stream, embed, held_out, cfg.shots, cfg.k, bank_cfg, seed=train.seeds[0]
                    ),
                },
                "retrieval_replay": replay_variants(stream, train, memory, predictions),
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

            mlflow.log_metrics(
                {k: v for k, v in flatten(metrics).items() if isinstance(v, (int, float))}
            )
            mlflow.log_artifacts(outs[args.bank], "bank")


if __name__ == "__main__":
    main()
