"""Run a learner through a stream experience by experience and fill the accuracy matrix."""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from clflow.metrics import summarize
from clflow.streams import Split, Stream, iter_batches
from clflow.util.progress import Progress

Predict = Callable[[np.ndarray], np.ndarray]


@runtime_checkable
class BoundaryAware(Protocol):
    """A learner that is told when an experience starts and ends (experience replay needs it;
    TAME must not)."""

    def begin_experience(self, X: np.ndarray, y: np.ndarray) -> object: ...

    def end_experience(self, X: np.ndarray, y: np.ndarray) -> object: ...


@dataclass
class RunResult:
    R: np.ndarray  # (T, T) accuracy matrix; NaN where not measured (rows before a resume point)
    b: np.ndarray  # (T,) untrained-model accuracy per experience
    batch_experience: np.ndarray  # experience of each training batch, in order (evaluation only)
    # (T + 1, n_test, n_classes) class probabilities on the test rows, untrained then after
    # each experience; kept only when asked (`keep_proba`: the baselines' predictions file)
    proba: np.ndarray | None = None
    # what the learner kept from the stream at the end (`memory_report()`: rows and bytes)
    memory: dict[str, int] | None = None

    def metrics(self) -> dict[str, float]:
        return summarize(self.R, self.b)


def most_memory(runs: Sequence[RunResult]) -> dict[str, int]:
    """The most rows and bytes any run's learner kept from the stream, its memory as every
    method reports it ({} when no learner reported one)."""
    reports = [r.memory for r in runs if r.memory]
    return {k: max(m[k] for m in reports) for k in reports[0]} if reports else {}


def experience_accuracies(predict: Predict, test: Split, n_experiences: int) -> np.ndarray:
    """Accuracy on the test rows of each experience (one predict call for all rows)."""
    return label_accuracies(predict(test.X), test, n_experiences)


def label_accuracies(pred: np.ndarray, test: Split, n_experiences: int) -> np.ndarray:
    """Accuracy of predicted labels `pred` (one per test row) on each experience's rows."""
    hits = pred == test.y
    return np.array([hits[test.experience == j].mean() for j in range(n_experiences)])


def result_from_proba(proba: np.ndarray, test: Split) -> RunResult:
    """The RunResult of stored test probabilities (untrained, then after each experience)."""
    T = len(proba) - 1
    R = np.array([label_accuracies(p.argmax(1), test, T) for p in proba[1:]])
    b = label_accuracies(proba[0].argmax(1), test, T)
    return RunResult(R, b, np.empty(0, dtype=np.int64), proba)


def fit_experience(
    learner,
    X: np.ndarray,
    y: np.ndarray,
    *,
    batch_size: int,
    epochs: int,
    seed: int,
    experience: int,
    progress: Progress | None = None,
) -> int:
    """`epochs` shuffled passes over one experience's rows; returns the number of batches.

    A learner that takes boundaries (ContinualLearner.begin_experience / end_experience) is told
    the experience starts and ends; a task-agnostic one (TAME) only ever sees the batches.
    """
    n = 0
    told = isinstance(learner, BoundaryAware)
    if told:
        learner.begin_experience(X, y)
    for epoch in range(epochs):
        for xb, yb in iter_batches(
            X, y, batch_size, seed=seed * 100_003 + experience * 101 + epoch
        ):
            learner.partial_fit(xb, yb)
            n += 1
            if progress is not None:
                progress.update(1, rows=len(yb))
    if told:
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
    keep_proba: bool = False,
) -> RunResult:
    """Train through each experience in order, evaluating on all experiences after each.

    `cumulative=True` trains on every experience seen so far (the joint upper bound).
    `start > 0` continues an already trained learner from experience `start`; its
    row `start - 1` is measured now, earlier rows are left NaN for the caller.
    The learner only ever receives (x, y) batches. `keep_proba` keeps the test probabilities
    behind every row of R (and b) in the result.
    """
    T = stream.n_experiences
    R = np.full((T, T), np.nan)
    probas: list[np.ndarray] = []

    def evaluate() -> np.ndarray:
        if not keep_proba:
            return experience_accuracies(learner.predict, stream.test, T)
        probas.append(learner.predict_proba(stream.test.X).astype(np.float32))
        return label_accuracies(probas[-1].argmax(1), stream.test, T)

    if start == 0:
        learner.initialize(stream.n_features)
        b = evaluate()
    else:
        b = np.full(T, np.nan)
        R[start - 1] = experience_accuracies(learner.predict, stream.test, T)
    train = stream.train
    batch_experience: list[int] = []
    experiences = [train.experience <= i if cumulative else train.experience == i for i in range(T)]
    total = sum(epochs * -(-int(rows.sum()) // batch_size) for rows in experiences[start:])
    with Progress(total, desc) as progress:
        for i in range(start, T):
            rows = experiences[i]
            n = fit_experience(
                learner,
                train.X[rows],
                train.y[rows],
                batch_size=batch_size,
                epochs=epochs,
                seed=seed,
                experience=i,
                progress=progress,
            )
            batch_experience += [i] * n
            R[i] = evaluate()
    proba = np.stack(probas) if keep_proba and start == 0 else None
    return RunResult(R, b, np.asarray(batch_experience, dtype=np.int64), proba)


def run_methods(
    makers: Mapping[str, Callable[[int], object]],
    stream: Stream,
    train,
    *,
    cumulative: Collection[str] = (),
    desc: str = "train",
    keep_proba: bool = False,
) -> dict[str, list[tuple[object, RunResult]]]:
    """{name: [(learner, result) per seed]} for every learner maker and seed in `train.seeds`.

    Every (maker, seed) pair is an independent job: they run in parallel processes when CPUs
    are free (`clflow.util.parallel`), the cumulative (joint) ones first since they take longest.
    """
    from clflow.util.parallel import run_parallel

    def job(name: str, seed: int) -> tuple[object, RunResult]:
        learner = makers[name](seed)
        result = run_stream(
            learner,
            stream,
            batch_size=train.batch_size,
            epochs=train.epochs,
            seed=seed,
            cumulative=name in cumulative,
            desc=f"{name} seed {seed}",
            keep_proba=keep_proba,
        )
        report = getattr(learner, "memory_report", None)
        result.memory = report() if report is not None else None
        return learner, result

    names = sorted(makers, key=lambda name: name not in cumulative)
    keys = [(name, seed) for name in names for seed in train.seeds]
    done = run_parallel([lambda key=key: job(*key) for key in keys], desc, unit="runs")
    out: dict[str, list[tuple[object, RunResult]]] = {name: [] for name in makers}
    for (name, _), run in zip(keys, done):
        out[name].append(run)
    return out
