"""Storage policies (buffers.py): reservoir, experience- and class-balanced buffers."""

import numpy as np
import pytest

from clflow.buffers import ReservoirBuffer


def test_reservoir_is_uniform_over_distinct_examples():
    counts = np.zeros(100)
    for seed in range(300):
        buf = ReservoirBuffer(10, seed=seed)
        X = np.arange(100, dtype=np.float32)[:, None]
        for start in range(0, 100, 7):
            buf.add(X[start : start + 7], np.zeros(len(X[start : start + 7]), int))
        counts[buf.X[:, 0].astype(int)] += 1
    # each example kept with probability 10/100: expected 30 of 300 runs
    assert counts.sum() == 3000
    assert counts[:50].sum() == pytest.approx(1500, rel=0.1)  # early examples are not favoured


def test_repeated_presentations_count_once():
    buf = ReservoirBuffer(5, seed=0)
    X = np.eye(3, dtype=np.float32)
    for _ in range(4):
        buf.add(X, np.array([0, 1, 2]))
    assert len(buf) == 3 and sorted(buf.y.tolist()) == [0, 1, 2]
    # an example evicted once stays out when it comes back (a recurring task)
    small = ReservoirBuffer(2, seed=0)
    for _ in range(3):
        small.add(np.arange(10, dtype=np.float32)[:, None], np.zeros(10, int))
    assert len(small) == 2 and len(set(small.X[:, 0].tolist())) == 2


def test_reservoir_sample_does_not_depend_on_order():
    X, y = np.arange(200, dtype=np.float32)[:, None], np.arange(200) % 3
    a, b = ReservoirBuffer(20, seed=4), ReservoirBuffer(20, seed=4)
    a.add(X, y)
    for i in np.random.default_rng(1).permutation(200):
        b.add(X[i : i + 1], y[i : i + 1])
    assert sorted(a.X[:, 0].tolist()) == sorted(b.X[:, 0].tolist())


def test_reservoir_and_its_checkpoint_stay_bounded(tmp_path):
    from clflow.checkpoint import load_checkpoint, save_checkpoint

    def checkpoint_size(n_rows: int) -> int:
        buf = ReservoirBuffer(50, seed=0)
        rng = np.random.default_rng(0)
        for _ in range(n_rows // 100):  # distinct rows, several epochs over them
            buf.add(rng.normal(size=(100, 8)).astype(np.float32), rng.integers(0, 10, 100))
        path = tmp_path / f"{n_rows}.pt"
        save_checkpoint(path, {"buffer": buf.get_state()})
        again = ReservoirBuffer(50, seed=0).set_state(load_checkpoint(path)["buffer"])
        assert np.array_equal(again.X, buf.X) and np.array_equal(again.priority, buf.priority)
        return path.stat().st_size

    # 100x buffer_size distinct rows: the checkpoint holds 50 rows, as after 100 rows
    assert checkpoint_size(5000) <= checkpoint_size(100) + 64


def test_experience_balanced_buffer_splits_memory_evenly():
    from clflow.buffers import ExperienceBalancedBuffer

    buf = ExperienceBalancedBuffer(10, seed=0)
    X0 = np.arange(100, dtype=np.float32)[:, None]
    buf.add_experience(X0, np.zeros(100, int))
    assert len(buf) == 10 and set(buf.y.tolist()) == {0}
    kept0 = set(buf.X[:, 0].tolist())
    buf.add_experience(X0 + 1000, np.ones(100, int))
    buf.add_experience(X0 + 2000, np.full(100, 2))
    assert [len(g[1]) for g in buf.groups.values()] == [
        4,
        3,
        3,
    ]  # 10 // 3, the remainder to the first group
    assert set(buf.groups[0][0][:, 0].tolist()) <= kept0  # shrinking keeps a subset of what it held
    assert buf.group_sizes(4) == [3, 3, 2, 2]


def test_class_balanced_buffer_shares_memory_among_classes():
    from clflow.buffers import ClassBalancedBuffer

    buf = ClassBalancedBuffer(9, seed=0)
    X = np.arange(300, dtype=np.float32)[:, None]
    buf.add_classes(X[:200], np.repeat([0, 1], 100))
    assert np.bincount(buf.y).tolist() == [5, 4]
    buf.add_classes(X[200:], np.full(100, 2))  # a third class: every class keeps 3
    assert np.bincount(buf.y).tolist() == [3, 3, 3] and len(buf) == 9
    assert set(buf.X[buf.y == 2, 0]) <= set(range(200, 300))  # rows stay with their class


def test_class_balanced_buffer_is_uniform_over_a_class_seen_twice():
    from clflow.buffers import ClassBalancedBuffer

    counts = np.zeros(100)
    for seed in range(300):
        buf = ClassBalancedBuffer(10, seed=seed)
        X = np.arange(100, dtype=np.float32)[:, None]
        buf.add_classes(X[:30], np.zeros(30, int))  # one class, in two experiences
        buf.add_classes(X[30:], np.zeros(70, int))
        counts[buf.X[:, 0].astype(int)] += 1
    assert counts[:30].sum() == pytest.approx(900, rel=0.15)  # 30 % of the 3000 kept
