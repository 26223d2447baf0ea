"""The class statistics of every row the experts learned (`tame/statistics.py`)."""

import numpy as np

from clflow.tame.statistics import ClassStatistics


def blobs(rng, centers, n, scale):
    X = np.concatenate([rng.normal(c, scale, size=(n, len(c))) for c in centers])
    return X, np.repeat(np.arange(len(centers)), n)


def test_rows_go_to_the_expert_owning_their_class():
    rng = np.random.default_rng(0)
    centers = rng.normal(0, 3, size=(4, 8))
    X, y = blobs(rng, centers, 200, 1.0)
    stats = ClassStatistics()
    stats.partial_fit(X[y < 2], y[y < 2], expert=7)  # expert 7 learned classes 0 and 1
    stats.partial_fit(X[y >= 2], y[y >= 2], expert=3)
    Xt, yt = blobs(rng, centers, 50, 1.0)
    lp = stats.log_proba(Xt, [3, 7])
    assert lp.shape == (200, 2) and np.allclose(np.exp(lp).sum(1), 1.0)
    routed = np.array([3, 7])[lp.argmax(1)]
    assert np.mean(routed == np.where(yt < 2, 7, 3)) > 0.95
    # a removed expert's rows join another: it now owns every class
    stats.merge(7, into=3)
    assert stats.covers([3]) and not stats.covers([3, 7])
    assert {c for e, c in stats.counts_} == {0, 1, 2, 3} and stats.counts_[3, 0] == 200
    assert stats.nbytes == 4 * 8 * 8 + 8 * 8 + 4 * 8


def test_state_round_trips_and_variance_is_pooled_within_classes():
    rng = np.random.default_rng(1)
    X, y = blobs(rng, [[0.0, 0.0], [100.0, 0.0]], 500, 2.0)
    stats = ClassStatistics().partial_fit(X, y, expert=0)
    stats.partial_fit(X[:10] + 5.0, y[:10], expert=1)
    _, _, var = stats._model([0, 1])
    assert np.all(var < 6.0)  # within classes (~4), not the 2,500 of the classes' spread
    again = ClassStatistics().set_state(stats.get_state())
    np.testing.assert_array_equal(again.log_proba(X, [0, 1]), stats.log_proba(X, [0, 1]))
