"""The retrieval stage's comparisons: each use of the demonstration bank against the model alone,
at the same memory and on the same seeds."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from clflow.baselines.methods import learner_for_method
from clflow.baselines.predictions import Predictions
from clflow.config import RetrievalConfig, TrainConfig
from clflow.evaluation import result_from_proba, run_methods, run_stream
from clflow.learners import learner_from_config
from clflow.metrics import mean_std
from clflow.plugins import ReplayPlugin
from clflow.retrieval import BankConfig
from clflow.retrieval.replay import RetrievalReplayPlugin
from clflow.retrieval.uses import augmented_run, blend, experience_votes
from clflow.streams import Stream

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
