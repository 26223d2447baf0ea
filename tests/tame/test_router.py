"""TAME's router (`tame/router.py`): the selector or the class statistics, chosen on held-out
buffer rows; handed the experts' buffers; its bytes; checkpoints from before it."""

import numpy as np
import pytest

from clflow.buffers import ReservoirBuffer
from clflow.config import StreamConfig
from clflow.evaluation import run_stream
from clflow.learners import ContinualLearner
from clflow.streams import build_stream
from clflow.tame import TameLearner
from clflow.tame.router import Router


@pytest.fixture(scope="module")
def split_digits():
    return build_stream(StreamConfig(source="digits", experiences=3, seed=0))


@pytest.fixture(scope="module")
def by_statistics(split_digits):
    learner = TameLearner(ContinualLearner(10), seed=0, route_by="statistics")
    run_stream(learner, split_digits, batch_size=32, epochs=2, seed=0)
    return learner


def test_statistics_route_every_expert_its_own_rows(by_statistics, split_digits):
    learner, test = by_statistics, split_digits.test
    assert learner.n_experts == 3 and learner.router_.routed_by_ == "statistics"
    ids = learner.router_.ids_
    expected = np.asarray(ids)[learner.router_.statistics_.log_proba(
        learner.router_._scaled(test.X), ids
    ).argmax(1)]  # fmt: skip
    np.testing.assert_array_equal(learner.route(test.X), expected)
    # each task's rows to the expert that learned most of them
    owner = {t: np.bincount(expected[test.task == t]).argmax() for t in range(3)}
    assert len(set(owner.values())) == 3
    assert np.mean(expected == np.array([owner[t] for t in test.task])) > 0.9
    # every row the experts learned is counted, not only their buffers
    counted = sum(learner.router_.statistics_.counts_.values())
    assert counted > 2 * sum(len(e.buffer) for e in learner.experts_.values())


def test_auto_keeps_the_router_that_routes_held_out_rows_better(split_digits, tmp_path):
    from clflow.tame.persist import load_tame, save_tame

    learner = TameLearner(ContinualLearner(10), seed=0)  # route_by auto, the default
    run_stream(learner, split_digits, batch_size=32, epochs=2, seed=0)
    X = split_digits.test.X
    learner.route(X)
    choice = learner.router_.route_choices_[-1]
    assert choice["experts"] == 3 and set(choice["scores"]) == {"selector", "statistics"}
    better = choice["scores"]["statistics"] > choice["scores"]["selector"]
    assert (
        learner.router_.routed_by_ == choice["chosen"] == ("statistics" if better else "selector")
    )
    save_tame(tmp_path / "c.pt", learner)
    again, _ = load_tame(tmp_path / "c.pt")
    assert (
        again.router_.routed_by_ == learner.router_.routed_by_
        and again.router_.route_choices_ == learner.router_.route_choices_
    )
    np.testing.assert_array_equal(again.predict(X), learner.predict(X))


def test_a_checkpoint_from_before_the_statistics_routes_by_its_selector(by_statistics, tmp_path):
    from clflow.checkpoint import load_checkpoint, save_checkpoint
    from clflow.tame.persist import load_tame, save_tame

    save_tame(tmp_path / "new.pt", by_statistics)
    ckpt = load_checkpoint(tmp_path / "new.pt")
    del ckpt["params"]["route_by"]  # as the previous release wrote it
    for key in ("statistics", "routed_by", "route_choices"):
        del ckpt["state"][key]
    save_checkpoint(tmp_path / "old.pt", ckpt)
    old, _ = load_tame(tmp_path / "old.pt")
    assert old.route_by == "selector" and old.router_.routed_by_ == "selector"
    X = np.random.default_rng(0).normal(size=(20, old.n_features_in_)).astype(np.float32)
    ids = np.asarray(old.router_.ids_)
    np.testing.assert_array_equal(old.route(X), ids[old.router_.selector_.log_proba(X).argmax(1)])


def test_a_router_handed_buffers_routes_their_rows_and_counts_its_bytes():
    """The router keeps no rows: it learns from the buffers it is handed on every call."""
    rng = np.random.default_rng(0)
    centers = rng.normal(0, 4, size=(4, 6))
    buffers = {5: ReservoirBuffer(60, seed=1), 9: ReservoirBuffer(60, seed=2)}
    router = Router(ContinualLearner(4), seed=0, epochs=30).initialize(6)
    for eid, classes in ((5, [0, 1]), (9, [2, 3])):
        for _ in range(4):  # four batches each expert learned
            y = rng.choice(classes, size=32)
            X = (centers[y] + rng.normal(size=(32, 6))).astype(np.float32)
            buffers[eid].add(X, y)
            router.learn(eid, X, y, buffers)
    yt = rng.integers(0, 4, size=200)
    Xt = (centers[yt] + rng.normal(size=(200, 6))).astype(np.float32)
    routed, confidence = router.route_confidence(Xt, buffers, default=5)
    assert router.ids_ == [5, 9] and set(np.unique(routed)) <= {5, 9}
    assert np.mean(routed == np.where(yt < 2, 5, 9)) > 0.9
    assert np.all((confidence > 0) & (confidence <= 1))
    [choice] = router.route_choices_
    assert choice["chosen"] == router.routed_by_ and choice["experts"] == 2
    selector_bytes = 4 * router.selector_.n_parameters()
    assert router.nbytes == selector_bytes + router.statistics_.nbytes
    assert router.statistics_.nbytes == 4 * 6 * 8 + 2 * 6 * 8 + 4 * 8  # sums, squares, counts


def test_tame_memory_counts_rows_and_router_in_bytes(by_statistics):
    report = by_statistics.memory_report()
    buffers = by_statistics.experts_.values()
    row_bytes = sum(e.buffer.nbytes for e in buffers)
    assert report["memory_rows"] == sum(len(e.buffer) for e in buffers) == 3 * 100
    assert report["router_bytes"] == by_statistics.router_.nbytes > 0
    assert report["memory_bytes"] == row_bytes + report["router_bytes"]
    # 64 features: float32 rows, int64 labels, uint64 priorities
    assert row_bytes == 300 * (64 * 4 + 8 + 8)
