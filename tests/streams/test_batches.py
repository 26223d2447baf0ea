import numpy as np

from clflow.config import StreamConfig
from clflow.evaluation import run_stream
from clflow.streams import arrival_order, build_stream, stream_batches


class Recorder:
    """A learner that records what it is given."""

    def initialize(self, n_features):
        self.calls = []
        return self

    def partial_fit(self, *args, **kwargs):
        assert not kwargs
        self.calls.append(args)
        return self

    def predict(self, X):
        return np.zeros(len(X), dtype=int)


def test_learners_only_see_x_and_y_in_arrival_order():
    s = build_stream(StreamConfig(source="digits", experiences=5))
    rec = Recorder()
    run_stream(rec, s, batch_size=16, epochs=1, seed=0)
    assert all(len(args) == 2 for args in rec.calls)
    assert all(x.shape[1] == s.n_features for x, _ in rec.calls)  # no extra column smuggled in
    # class-incremental: batch labels come from one experience at a time, in order
    groups = [set(np.unique(s.train.y[s.train.experience == e]).tolist()) for e in range(5)]
    order = [next(e for e, g in enumerate(groups) if set(y.tolist()) <= g) for _, y in rec.calls]
    assert order == sorted(order) and set(order) == set(range(5))
    assert sum(len(y) for _, y in rec.calls) == len(s.train)


def test_arrival_order_sorted_by_experience_shuffled_within():
    s = build_stream(StreamConfig(source="digits", experiences=5))
    order = arrival_order(s.train, seed=0)
    assert np.all(np.diff(s.train.experience[order]) >= 0)
    assert not np.array_equal(order, np.sort(order))
    assert np.array_equal(order, arrival_order(s.train, seed=0))
    batches = list(stream_batches(s.train, 32, seed=0))
    assert all(len(b) == 2 for b in batches)
    assert np.array_equal(np.concatenate([y for _, y in batches]), s.train.y[order])
