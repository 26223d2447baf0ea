"""The LingoCL comparison: one-hot head vs frozen random targets vs language targets, each with
the same learners, memory and seeds (the `lingo` stage and bench/lingo.py share it)."""

from __future__ import annotations

import numpy as np

from clflow.config import LingoConfig, TrainConfig
from clflow.evaluation import RunResult, run_methods
from clflow.lingo.targets import random_targets
from clflow.methods import learner_for_method
from clflow.streams import Stream


def head_targets(head: str, language: np.ndarray, seed: int) -> np.ndarray | None:
    return {
        "linear": None,
        "random": random_targets(*language.shape, seed=seed),
        "language": language,
    }[head]


def compare(
    stream: Stream,
    language: np.ndarray,
    train: TrainConfig,
    cfg: LingoConfig,
    memory: int,
) -> dict[str, dict[str, list[RunResult]]]:
    """{method: {head: [result per seed]}} on one stream; every (method, head, seed) is an
    independent run (in parallel processes when CPUs are free)."""
    makers = {
        (method, head): lambda seed, method=method, head=head: learner_for_method(
            method,
            stream,
            train,
            seed,
            memory,
            targets=head_targets(head, language, seed),
            mask_unseen=True,
        )
        for method in cfg.methods
        for head in cfg.heads
    }
    runs = run_methods(
        {f"{m}/{h}": make for (m, h), make in makers.items()}, stream, train, desc="lingo"
    )
    out: dict[str, dict[str, list[RunResult]]] = {}
    for method, head in makers:
        out.setdefault(method, {})[head] = [r for _, r in runs[f"{method}/{head}"]]
    return out
