"""Run a learner through a stream experience by experience and fill the accuracy matrix."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
from tqdm.auto import tqdm

from clflow.metrics import summarize
from clflow.streams import Split, Stream, iter_batches

Predict = Callable[[np.ndarray], np.ndarray]


@runtime_checkable
class BoundaryAware(Protocol):
    """A learner that is told when an experience ends (experience replay needs it; TAME must
    not)."""

    def end_experience(self, X: np.ndarray, y: np.ndarray) -> object: ...


@dataclass
class RunResult:
    R: np.ndarray  # (T, T) accuracy matrix; NaN where not measured (rows before a resume point)
    b: np.ndarray  # (T,) untrained-model accuracy per experience
    batch_experience: np.ndarray  # experience of each training batch, in order (evaluation only)

    def metrics(self) -> dict[str, float]:
        return summarize(self.R, self.b)


def experience_accuracies(predict: Predict, test: Split, n_experiences: int) -> np.ndarray:
    """Accuracy on the test rows of each experience (one predict call for all rows)."""
    pred = predict(test.X)
    hits = pred == test.y
    return np.array([hits[test.experience == j].mean() for j in range(n_experiences)])


def fit_experience(
    learner,
    X: np.ndarray,
    y: np.ndarray,
    *,
    batch_size: int,
    epochs: int,
    seed: int,
    experience: int,
) -> int:
    """`epochs` shuffled passes over one experience's rows; returns the number of batches.

    A learner that takes boundaries (ContinualLearner.end_experience) is told the
    experience ended; a task-agnostic one (TAME) only ever sees the batches.
    """
    n = 0
    for epoch in range(epochs):
        for xb, yb in iter_batches(
            X, y, batch_size, seed=seed * 100_003 + experience * 101 + epoch
        ):
            learner.partial_fit(xb, yb)
            n += 1
    if isinstance(learner, BoundaryAware):
        learner.end_experience(X, y)
    return n


def untrained_accuracies(learner, stream: Stream) -> np.ndarray:
    """b_j: accuracy of the freshly initialised learner on each experience (FWT reference)."""
    learner.initialize(stream.n_features)
    return experience_accuracies(learner.predict, stream.test, stream.n_experiences)


def run_stream(
    learner,
    stream: Stream,
    *,
    batch_size: int,
    epochs: int,
    seed: int,
    cumulative: bool = False,
    start: int = 0,
    desc: str = "train",
) -> RunResult:
    """Train through each experience in order, evaluating on all experiences after each.

    `cumulative=True` trains on every experience seen so far (the joint upper bound).
    `start > 0` continues an already trained learner from experience `start`; its
    row `start - 1` is measured now, earlier rows are left NaN for the caller.
    The learner only ever receives (x, y) batches.
    """
    T = stream.n_experiences
    R = np.full((T, T), np.nan)
    if start == 0:
        b = untrained_accuracies(learner, stream)
    else:
        b = np.full(T, np.nan)
        R[start - 1] = experience_accuracies(learner.predict, stream.test, T)
    train = stream.train
    batch_experience: list[int] = []
    for i in tqdm(range(start, T), desc=desc, unit="exp", leave=False, disable=None):
        rows = train.experience <= i if cumulative else train.experience == i
        n = fit_experience(
            learner,
            train.X[rows],
            train.y[rows],
            batch_size=batch_size,
            epochs=epochs,
            seed=seed,
            experience=i,
        )
        batch_experience += [i] * n
        R[i] = experience_accuracies(learner.predict, stream.test, T)
    return RunResult(R, b, np.asarray(batch_experience, dtype=np.int64))


def run_seeds(
    make: Callable[[int], object],
    stream: Stream,
    train,
    *,
    cumulative: bool = False,
    desc: str = "train",
) -> list[tuple[object, RunResult]]:
    """(learner, result) for every seed in `train.seeds`; `make(seed)` builds each learner."""
    out = []
    for seed in train.seeds:
        learner = make(seed)
        out.append(
            (
                learner,
                run_stream(
                    learner,
                    stream,
                    batch_size=train.batch_size,
                    epochs=train.epochs,
                    seed=seed,
                    cumulative=cumulative,
                    desc=f"{desc} seed {seed}",
                ),
            )
        )
    return out
