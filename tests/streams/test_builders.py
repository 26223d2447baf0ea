import json

import numpy as np
import pytest

from clflow.config import StreamConfig
from clflow.streams import build_stream, class_groups, permutation


@pytest.fixture(scope="module")
def split_digits():
    return build_stream(StreamConfig(source="digits", experiences=5, seed=0))


def test_class_groups_partition_all_classes():
    groups = class_groups(10, 5, seed=3)
    allc = np.concatenate(groups)
    assert sorted(allc.tolist()) == list(range(10))
    assert all(len(g) == 2 for g in groups)
    assert [g.tolist() for g in class_groups(10, 5, seed=3)] == [g.tolist() for g in groups]
    assert [g.tolist() for g in class_groups(10, 5, seed=4)] != [g.tolist() for g in groups]


def test_split_digits_experiences_hold_disjoint_class_groups(split_digits):
    tr, te = split_digits.train, split_digits.test
    seen = set()
    for e in range(5):
        classes = set(np.unique(tr.y[tr.experience == e]).tolist())
        assert len(classes) == 2 and not classes & seen
        assert set(np.unique(te.y[te.experience == e]).tolist()) == classes
        seen |= classes
    assert seen == set(range(10))
    assert split_digits.classes[0] == "zero" and len(split_digits.classes) == 10


def test_split_is_stratified(split_digits):
    tr, te = split_digits.train, split_digits.test
    ratio = np.bincount(te.y) / (np.bincount(tr.y) + np.bincount(te.y))
    assert np.all(np.abs(ratio - 0.3) < 0.03)


def test_permutations_are_deterministic_and_distinct():
    p1 = permutation(1, 64, seed=0)
    assert np.array_equal(p1, permutation(1, 64, seed=0))
    assert not np.array_equal(p1, permutation(2, 64, seed=0))
    assert not np.array_equal(p1, permutation(1, 64, seed=1))
    assert np.array_equal(permutation(0, 64, seed=0), np.arange(64))
    assert sorted(p1.tolist()) == list(range(64))


def test_permuted_digits_applies_each_tasks_permutation():
    s = build_stream(StreamConfig(source="permuted_digits", experiences=3, seed=0))
    base = build_stream(StreamConfig(source="permuted_digits", experiences=1, seed=0))
    te, ref = s.test, base.test  # test rows are the full test set, transformed per task
    for t in range(3):
        rows = te.experience == t
        assert np.array_equal(te.X[rows], ref.X[:, permutation(t, 64, 0)])
        assert np.array_equal(te.y[rows], ref.y)
    again = build_stream(StreamConfig(source="permuted_digits", experiences=3, seed=0))
    assert np.array_equal(again.train.X, s.train.X)


def test_recurring_tasks_get_fresh_rows():
    s = build_stream(
        StreamConfig(source="permuted_digits", experiences=3, tasks=[0, 1, 0, 2, 1], seed=0)
    )
    tr = s.train
    assert [int(tr.task[tr.experience == e][0]) for e in range(5)] == [0, 1, 0, 2, 1]
    a, b = tr.X[tr.experience == 0], tr.X[tr.experience == 2]
    rows_a = {r.tobytes() for r in a}
    assert not any(r.tobytes() in rows_a for r in b)


def test_rotated_digits_rotates():
    s = build_stream(
        StreamConfig(source="rotated_digits", experiences=2, rotation_step=90.0, seed=0)
    )
    te = s.test
    x0 = te.X[te.experience == 0][0].reshape(8, 8)
    x1 = te.X[te.experience == 1][0].reshape(8, 8)
    assert np.allclose(np.rot90(x0), x1, atol=1e-5) or np.allclose(np.rot90(x0, -1), x1, atol=1e-5)


def test_too_many_experiences():
    with pytest.raises(ValueError, match="11 experiences"):
        build_stream(StreamConfig(source="digits", experiences=11))


@pytest.fixture(scope="module")
def mnist1d_raw():
    from clflow.streams.loaders import load_mnist1d

    return load_mnist1d(test_size=0.2, n_samples=2000)


def test_mnist1d_is_generated_offline_and_deterministic(mnist1d_raw):
    from clflow.streams.loaders import _generate_mnist1d, load_mnist1d

    state = np.random.get_state()[1].copy()
    _generate_mnist1d.cache_clear()  # generated again, not the process's kept arrays
    again = load_mnist1d(test_size=0.2, n_samples=2000)
    assert np.array_equal(np.random.get_state()[1], state)  # numpy's global generator is left alone
    assert mnist1d_raw.X_train.shape == (1600, 40) and mnist1d_raw.X_test.shape == (400, 40)
    assert np.array_equal(again.X_train, mnist1d_raw.X_train)
    # the kept arrays are the process's: a caller writing to its own leaves the next one's alone
    again.X_train[:] = 0
    assert np.array_equal(load_mnist1d(test_size=0.2, n_samples=2000).X_train, mnist1d_raw.X_train)
    assert sorted(np.unique(mnist1d_raw.y_train).tolist()) == list(range(10))


@pytest.mark.slow  # generates MNIST-1D (3-7 s) unless this process already did
def test_split_and_permuted_mnist1d():
    split = build_stream(StreamConfig(source="mnist1d", experiences=5, limit=3000))
    assert split.n_features == 40 and split.n_experiences == 5 and len(split.classes) == 10
    for e in range(5):
        assert len(np.unique(split.train.y[split.train.experience == e])) == 2
    perm = build_stream(
        StreamConfig(source="permuted_mnist1d", experiences=3, tasks=[0, 1, 0, 2], limit=2000)
    )
    te = perm.test
    assert [int(perm.train.task[perm.train.experience == e][0]) for e in range(4)] == [0, 1, 0, 2]
    assert np.array_equal(
        te.X[te.experience == 1], te.X[te.experience == 0][:, permutation(1, 40, 0)]
    )
    assert np.array_equal(te.X[te.experience == 2], te.X[te.experience == 0])  # task 0 recurs
    assert len(np.unique(perm.train.y[perm.train.experience == 1])) == 10


def test_too_small_a_limit_is_named_instead_of_an_empty_experience():
    from clflow.config import StreamConfig
    from clflow.streams.builders import EmptyExperience, build_stream

    with pytest.raises(EmptyExperience, match="stream.limit 5 is too small") as err:
        build_stream(StreamConfig(limit=5))
    assert err.value.field == "stream.limit"


def test_stream_shape_gives_a_parquet_stream_its_shape(tmp_path):
    from dataclasses import replace

    from clflow.errors import ConfigError, StreamError
    from clflow.streams import load_stream, write_stream

    digits = build_stream(StreamConfig(source="digits", experiences=2, limit=200))
    write_stream(replace(digits, shape=None), tmp_path / "s")  # a user's stream: no shape
    parquet = dict(source="parquet", path=str(tmp_path / "s"))
    assert build_stream(StreamConfig(**parquet)).shape is None
    assert build_stream(StreamConfig(**parquet, shape=[1, 64])).shape == (1, 64)
    with pytest.raises(ConfigError, match="field 'stream.shape': \\(1, 40\\) holds 40 values"):
        build_stream(StreamConfig(**parquet, shape=[1, 40]))
    write_stream(digits, tmp_path / "s")  # meta.json says [1, 8, 8]
    with pytest.raises(ConfigError, match="differs from \\[1, 8, 8\\]"):
        build_stream(StreamConfig(**parquet, shape=[1, 64]))
    meta = json.loads((tmp_path / "s" / "meta.json").read_text())
    (tmp_path / "s" / "meta.json").write_text(json.dumps({**meta, "shape": [1, 8, 9]}))
    with pytest.raises(StreamError, match="meta.json: field 'shape'"):
        load_stream(tmp_path / "s")
