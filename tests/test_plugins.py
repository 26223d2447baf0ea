import numpy as np
import pytest

from clflow.plugins import ReplayPlugin, ReservoirBuffer


def test_reservoir_is_uniform_over_distinct_examples():
    counts = np.zeros(100)
    for seed in range(300):
        buf = ReservoirBuffer(10, seed=seed)
        X = np.arange(100, dtype=np.float32)[:, None]
        for start in range(0, 100, 7):
            buf.add(X[start:start + 7], np.zeros(len(X[start:start + 7]), int))
        counts[buf.X[:, 0].astype(int)] += 1
    # each example kept with probability 10/100: expected 30 of 300 runs
    assert counts.sum() == 3000
    assert counts[:50].sum() == pytest.approx(1500, rel=0.1)  # early examples are not favoured


def test_repeated_presentations_count_once():
    buf = ReservoirBuffer(5, seed=0)
    X = np.eye(3, dtype=np.float32)
    for _ in range(4):
        buf.add(X, np.array([0, 1, 2]))
    assert buf.n_seen == 3 and len(buf) == 3


def test_replay_doubles_batch_from_memory():
    plug = ReplayPlugin(memory=4, seed=0)
    X, y = np.ones((3, 2), np.float32), np.array([1, 1, 1])
    assert plug.before_step(X, y)[0].shape == (3, 2)  # empty memory: batch unchanged
    plug.after_step(np.zeros((4, 2), np.float32) + np.arange(4)[:, None], np.array([0, 0, 0, 0]))
    Xb, yb = plug.before_step(X, y)
    assert Xb.shape == (6, 2) and list(yb[:3]) == [1, 1, 1] and list(yb[3:]) == [0, 0, 0]


def test_retrieval_replay_rehearses_nearest_other_class_samples():
    from clflow.plugins import RetrievalReplayPlugin

    plug = RetrievalReplayPlugin(memory=10, seed=0)
    stored = np.array([[1, 0], [0, 1], [0.9, 0.1], [-1, 0]], np.float32)
    plug.after_step(stored, np.array([0, 1, 2, 0]))
    X, y = np.array([[1, 0.05]], np.float32), np.array([2])
    Xb, yb = plug.before_step(X, y)
    # nearest stored sample of another class than 2 is [1, 0] (class 0); as many as the batch
    assert yb.tolist() == [2, 0] and np.allclose(Xb[1], [1, 0])
    plain = RetrievalReplayPlugin(memory=10, seed=0, other_classes=False)
    plain.after_step(stored, np.array([0, 1, 2, 0]))
    assert np.allclose(plain.before_step(X, y)[0][1], [1, 0])  # cosine: [1, 0] beats [0.9, 0.1]
