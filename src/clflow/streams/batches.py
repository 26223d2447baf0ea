"""Training batches in arrival order. Learners see (x, y) only, never `experience` or `task`."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from clflow.streams.schema import Split


def arrival_order(split: Split, seed: int) -> np.ndarray:
    """Row indices sorted by experience, shuffled within each experience (DESIGN.md)."""
    rng = np.random.default_rng(seed)
    order = [
        rng.permutation(np.flatnonzero(split.experience == e)) for e in np.unique(split.experience)
    ]
    return np.concatenate(order) if order else np.empty(0, dtype=np.int64)


def iter_batches(
    X: np.ndarray,
    y: np.ndarray,
    batch_size: int,
    *,
    seed: int | None = None,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield (x, y) batches of the given rows, shuffled when a seed is given."""
    idx = np.arange(len(y)) if seed is None else np.random.default_rng(seed).permutation(len(y))
    for start in range(0, len(idx), batch_size):
        rows = idx[start : start + batch_size]
        yield X[rows], y[rows]


def experience_batches(
    split: Split,
    experience: int,
    batch_size: int,
    *,
    epochs: int = 1,
    seed: int = 0,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Batches of one experience, `epochs` passes, reshuffled each pass."""
    rows = split.experience == experience
    X, y = split.X[rows], split.y[rows]
    for epoch in range(epochs):
        yield from iter_batches(X, y, batch_size, seed=seed * 1000 + experience * 97 + epoch)


def stream_batches(
    split: Split, batch_size: int, *, seed: int = 0
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """The whole training stream as one task-agnostic sequence of batches, in arrival order."""
    order = arrival_order(split, seed)
    X, y = split.X[order], split.y[order]
    yield from iter_batches(X, y, batch_size)
