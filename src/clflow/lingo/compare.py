"""The LingoCL comparison: one-hot head vs frozen random targets vs language targets, each with
the same learners, memory and seeds (the `lingo` stage and bench/lingo.py share it)."""

from __future__ import annotations

import numpy as np

from clflow.baselines.methods import learner_for_method
from clflow.config import LingoConfig, TrainConfig
from clflow.evaluation import RunResult, label_accuracies, most_memory, run_methods
from clflow.lingo.targets import random_targets
from clflow.metrics import mean_std, zero_shot
from clflow.streams import Stream


def head_options(
    head: str, language: np.ndarray, seed: int, text: bool = False, learnt_weight: float = 0.3
) -> dict:
    """The learner arguments of a head. Every head scores only the classes seen so far while it
    trains; on a text stream the language head's targets are in the documents' own space, so it
    also predicts the classes that have a name but no label yet (zero-shot)."""
    if head == "linear":
        return {"targets": None, "mask_unseen": True}
    if head == "random":
        return {"targets": random_targets(*language.shape, seed=seed), "mask_unseen": True}
    anchored = learnt_weight if text else None
    return {"targets": language, "mask_unseen": True, "anchored": anchored, "zero_shot": text}


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
            **head_options(head, language, seed, stream.is_text, cfg.learnt_weight),
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


def names_alone(stream: Stream, language: np.ndarray) -> dict[str, float]:
    """The class names with no training at all: each text test row goes to the class whose name
    embedding is closest (cosine). `names_alone` is the mean over experiences j > 0, the rows
    `zero_shot` is measured on; `names_alone_all` covers every test row. {} for a stream that
    is not text (its features are not in the names' space)."""
    if not stream.is_text:
        return {}
    acc = label_accuracies(
        (stream.test.X @ language.T).argmax(1), stream.test, stream.n_experiences
    )
    later = acc[1:] if len(acc) > 1 else acc
    return {"names_alone": float(later.mean()), "names_alone_all": float(acc.mean())}


def head_metrics(
    results: dict[str, dict[str, list[RunResult]]],
) -> dict[str, dict[str, dict[str, float]]]:
    """{method: {head: mean ± std over seeds}} of the DESIGN.md metrics and `zero_shot` (accuracy
    on each experience before its first label: 0 for heads that mask unseen classes), with the
    most rows and bytes any seed kept (`memory_rows`, `memory_bytes`), as the baselines report."""
    return {
        method: {
            head: {
                **mean_std([{**r.metrics(), "zero_shot": zero_shot(r.R)} for r in runs]),
                **most_memory(runs),
            }
            for head, runs in heads.items()
        }
        for method, heads in results.items()
    }
