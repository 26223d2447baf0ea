"""Retrieval replay: rehearse the stored samples nearest to the current batch (a FAISS search)."""

from __future__ import annotations

import numpy as np

from clflow.plugins import ReplayPlugin


def _unit(X: np.ndarray) -> np.ndarray:
    X = np.asarray(X, dtype=np.float32)
    return X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)


def nearest_stored(batch: np.ndarray, stored: np.ndarray, n: int) -> np.ndarray:
    """Positions in `stored` of the `n` samples most similar (cosine) to the batch: each batch
    row's min(n, len(stored)) nearest stored samples are the candidates, ranked by their best
    similarity to any batch row. An exact search, as a FAISS Flat inner-product index over unit
    vectors gives, done with one matrix product: building an index for every batch cost 6x a
    training step (measured on 784 features, memory 200)."""
    sims = _unit(batch) @ _unit(stored).T  # (batch, stored)
    k = min(len(stored), n)
    top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
    hit = np.full(sims.shape, -np.inf, dtype=sims.dtype)
    np.put_along_axis(hit, top, np.take_along_axis(sims, top, axis=1), axis=1)
    best = hit.max(axis=0)  # best similarity of each stored sample, where it is a candidate
    candidates = np.flatnonzero(best > -np.inf)
    return candidates[np.argsort(-best[candidates], kind="stable")][:n]


class RetrievalReplayPlugin(ReplayPlugin):
    """Replay that rehearses the stored samples nearest to the current batch instead of random ones.

    Same reservoir memory as ReplayPlugin; an exact inner-product search over it
    ranks stored samples by their best similarity to any batch row and rehearses the
    top len(batch), as many as random replay does.
    With `other_classes=True` only stored samples of classes absent from the batch
    are candidates: the old examples most easily confused with the new ones.
    (Without it, a new class's nearest stored rows are of the same new class, so
    old classes are never rehearsed: measured in the README.)
    """

    def __init__(self, memory: int, seed: int = 0, other_classes: bool = True):
        super().__init__(memory, seed)
        self.other_classes = other_classes

    def before_step(self, X: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if not len(self.buffer):
            return X, y
        pool = (
            np.flatnonzero(~np.isin(self.buffer.y, y))
            if self.other_classes
            else np.arange(len(self.buffer))
        )
        if not len(pool):
            return X, y
        chosen = pool[nearest_stored(X, self.buffer.X[pool], len(y))]
        return np.concatenate([X, self.buffer.X[chosen]]), np.concatenate(
            [y, self.buffer.y[chosen]]
        )
