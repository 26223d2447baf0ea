"""Training TAME on a stream, one seed at a time, continuing from a checkpoint when the stream only
gained experiences (the `tame` stage and the benchmarks share it)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from clflow.config import TameConfig, TrainConfig
from clflow.evaluation import RunResult, run_stream, untrained_accuracies
from clflow.learners import learner_from_config
from clflow.streams import Stream
from clflow.tame import evaluate, incremental
from clflow.tame.learner import TameLearner
from clflow.tame.persist import restore, save_tame


def make_tame(
    stream: Stream,
    train: TrainConfig,
    cfg: TameConfig,
    seed: int,
    targets: np.ndarray | None = None,
) -> TameLearner:
    """TAME whose experts clone the `train` learner (with language targets when tame.head is
    lingo)."""
    expert = learner_from_config(stream, train, seed, targets=targets)
    hyper = cfg.model_dump(exclude={"match_tolerance", "head", "resume"})
    return TameLearner(expert, seed=seed, **hyper)


def train_seed(
    stream: Stream,
    train: TrainConfig,
    cfg: TameConfig,
    seed: int,
    ckpt_path: Path,
    save_to: Path,
    targets: np.ndarray | None = None,
) -> tuple[TameLearner, RunResult, int]:
    """Train (or continue from `ckpt_path`) one seed and save it to `save_to`; returns the learner,
    its full result and where it resumed."""
    fp = incremental.fingerprint(
        {
            "train": train.model_dump(),
            "tame": cfg.model_dump(exclude={"resume"}),  # a retrain can be continued later
            "seed": seed,
            "targets": None if targets is None else targets.round(6).tolist(),
        },
        stream,
    )
    start, ckpt = incremental.resume_point(ckpt_path, stream, fp) if cfg.resume else (0, None)
    learner = make_tame(stream, train, cfg, seed, targets)
    run = dict(
        batch_size=train.batch_size, epochs=train.epochs, seed=seed, desc=f"tame seed {seed}"
    )
    if ckpt is None:
        result = run_stream(learner, stream, **run)
    else:
        restore(ckpt, ckpt_path, learner)
        result = incremental.merge(ckpt, run_stream(learner, stream, start=start, **run))
        result.b = untrained_accuracies(make_tame(stream, train, cfg, seed, targets), stream)
    save_tame(
        save_to,
        learner,
        fingerprint=fp,
        experiences=stream.n_experiences,
        rows_hash=incremental.consumed_hash(stream, stream.n_experiences),
        R=result.R,
        batch_experience=result.batch_experience,
        classes=stream.classes,
    )
    return learner, result, start


def scored(
    trained: tuple[TameLearner, RunResult, int], stream: Stream, cfg: TameConfig
) -> tuple[TameLearner, RunResult, int, dict[str, float]]:
    """A `train_seed` outcome with the seed's scores (metrics, detection, routing) added."""
    learner, result, start = trained
    scores = evaluate.tame_scores(learner, stream, result.batch_experience, cfg.match_tolerance)
    return learner, result, start, {**result.metrics(), **scores}


def train_seeds(
    stream: Stream,
    train: TrainConfig,
    cfg: TameConfig,
    checkpoints: Path,
    save_to: Path,
    targets: np.ndarray | None = None,
) -> list[tuple[TameLearner, RunResult, int, dict[str, float]]]:
    """`scored(train_seed(...))` for every seed of `train.seeds`, in parallel processes when CPUs
    are free: each continues from `checkpoints/seed_<s>.pt` and saves to `save_to/seed_<s>.pt`."""
    from clflow.util.parallel import run_parallel

    jobs = [
        lambda seed=seed: scored(
            train_seed(
                stream,
                train,
                cfg,
                seed,
                checkpoints / f"seed_{seed}.pt",
                save_to / f"seed_{seed}.pt",
                targets,
            ),
            stream,
            cfg,
        )
        for seed in train.seeds
    ]
    return run_parallel(jobs, "tame", unit="seeds")
