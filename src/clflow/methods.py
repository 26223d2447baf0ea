"""The baseline methods by name (`baselines.methods`): a learner and its plugins for each.

Kept apart from `clflow.learners` so that the learners (TAME's experts among them) do not
import `clflow.config`: a parameter's description is not part of a model's code.
"""

from __future__ import annotations

from clflow.config import BaselinesConfig
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
