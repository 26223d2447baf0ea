"""The baseline methods by name (`baselines.methods`): a learner and its plugins for each.

Kept apart from `clflow.learners` so that the learners (TAME's experts among them) do not
import `clflow.config`: a parameter's description is not part of a model's code.
"""

from __future__ import annotations

import numpy as np

from clflow.config import BaselinesConfig, TrainConfig
from clflow.evaluation import RunResult, run_methods, run_stream
from clflow.learners import ContinualLearner, GDumbLearner, learner_from_config
from clflow.plugins import (
    AsymmetricReplayPlugin,
    DarkReplayPlugin,
    ExperienceReplayPlugin,
    Plugin,
    ReplayPlugin,
)
from clflow.streams import Stream


def method_plugins(method: str, memory: int, seed: int, options: BaselinesConfig) -> list[Plugin]:
    """The plugins of a baseline method. `replay` is experience replay as Avalanche has it (a
    buffer of past experiences, balanced over them, updated at each boundary); `replay_online`,
    `er_ace`, `der` and `derpp` keep a reservoir updated after every batch, which needs no
    boundary (TAME's fair peers)."""
    if method == "replay":
        return [ExperienceReplayPlugin(memory, seed=seed)]
    if method == "replay_online":
        return [ReplayPlugin(memory, seed=seed)]
    storage = options.peer_storage
    if method == "er_ace":
        return [AsymmetricReplayPlugin(memory, seed=seed, storage=storage)]
    if method == "der":
        return [DarkReplayPlugin(memory, options.der_alpha, 0.0, seed, storage)]
    if method == "derpp":
        return [DarkReplayPlugin(memory, options.derpp_alpha, options.derpp_beta, seed, storage)]
    return []


def learner_for_method(
    method: str,
    stream: Stream,
    train,
    seed: int,
    memory: int,
    options: BaselinesConfig | None = None,
    **head,
) -> ContinualLearner:
    """The learner of a `baselines.methods` entry at `memory` stored rows: finetune (no plugin),
    a replay (replay, replay_online, er_ace, der, derpp) or gdumb; `options` (a BaselinesConfig,
    default its defaults) holds DER's weights and GDumb's passes. `joint` trains like finetune
    (the harness feeds it every experience seen so far)."""
    options = options or BaselinesConfig()
    if method == "gdumb":
        return learner_from_config(
            stream,
            train,
            seed,
            cls=GDumbLearner,
            memory=memory,
            epochs=options.gdumb_epochs or train.epochs,
            batch_size=train.batch_size,
            **head,
        )
    plugins = method_plugins(method, memory, seed, options)
    return learner_from_config(stream, train, seed, plugins, **head)


def run_baselines(
    stream: Stream, train: TrainConfig, cfg: BaselinesConfig
) -> dict[str, list[tuple[ContinualLearner, RunResult]]]:
    """Every method of `cfg.methods` on every seed: (trained learner, result) per method, in
    seed order; `joint` sees every experience so far at once, the others one at a time."""
    makers = {
        method: lambda seed, method=method: learner_for_method(
            method, stream, train, seed, cfg.memory, cfg
        )
        for method in cfg.methods
    }
    return run_methods(
        makers, stream, train, cumulative=["joint"], desc="baselines", keep_proba=True
    )


def finetune_accuracy(stream: Stream, train: TrainConfig) -> float:
    """The finetune baseline through the whole stream (first seed): accuracy on every test row at
    the end."""
    seed = train.seeds[0]
    learner = learner_from_config(stream, train, seed)
    run_stream(learner, stream, batch_size=train.batch_size, epochs=train.epochs, seed=seed)
    return float(np.mean(learner.predict(stream.test.X) == stream.test.y))
