"""Retrieval replay: rehearse the stored samples nearest to the current batch (a FAISS search)."""

from __future__ import annotations

import numpy as np

from clflow.plugins import ReplayPlugin
from clflow.retrieval.bank import BankConfig, DemoBank


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
        bank = DemoBank(X.shape[1], BankConfig(index="flat"))
        bank.add(self.buffer.X[pool], self.buffer.y[pool])
        scores, ids, _ = bank.search(X, min(len(pool), len(y)))
        best: dict[int, float] = {}
        for i, sc in zip(
            ids.ravel(), scores.ravel()
        ):  # best similarity of each stored sample to the batch
            if i >= 0 and sc > best.get(int(i), -np.inf):
                best[int(i)] = float(sc)
        chosen = pool[sorted(best, key=best.__getitem__, reverse=True)[: len(y)]]
        return np.concatenate([X, self.buffer.X[chosen]]), np.concatenate(
            [y, self.buffer.y[chosen]]
        )
