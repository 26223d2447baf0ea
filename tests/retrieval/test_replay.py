"""Retrieval replay's nearest-sample choice: the same as an exact FAISS search, without an index."""

from __future__ import annotations

import numpy as np
import pytest

from clflow.retrieval import BankConfig, DemoBank
from clflow.retrieval.replay import nearest_stored


def faiss_choice(batch: np.ndarray, stored: np.ndarray, n: int) -> list[int]:
    """The choice as a Flat inner-product FAISS index makes it (cosine on unit vectors)."""
    bank = DemoBank(batch.shape[1], BankConfig(index="flat"))
    bank.add(stored, np.zeros(len(stored), dtype=np.int64))
    scores, ids, _ = bank.search(batch, min(len(stored), n))
    best: dict[int, float] = {}
    for i, sc in zip(ids.ravel(), scores.ravel()):
        if i >= 0 and sc > best.get(int(i), -np.inf):
            best[int(i)] = float(sc)
    return sorted(best, key=best.__getitem__, reverse=True)[:n]


@pytest.mark.parametrize("n_stored", [5, 32, 200])
def test_same_choice_as_an_exact_faiss_search(n_stored):
    rng = np.random.default_rng(n_stored)
    batch = rng.random((32, 784)).astype(np.float32) * 255
    stored = rng.random((n_stored, 784)).astype(np.float32) * 255
    got = nearest_stored(batch, stored, 32).tolist()
    assert got == faiss_choice(batch, stored, 32)
    assert len(got) == len(set(got)) <= min(32, n_stored)
