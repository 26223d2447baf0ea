"""Routing by the class statistics of every row the experts learned (`tame.route_by`)."""

import numpy as np
import pytest

from clflow.config import StreamConfig
from clflow.evaluation import run_stream
from clflow.learners import ContinualLearner
from clflow.streams import build_stream
from clflow.tame import TameLearner
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
    assert learner.n_experts == 3 and learner.routed_by_ == "statistics"
    ids = learner.selector_ids_
    expected = np.asarray(ids)[learner.statistics_.log_proba(
        learner._scaled(test.X), ids
    ).argmax(1)]  # fmt: skip
    np.testing.assert_array_equal(learner.route(test.X), expected)
    # each task's rows to the expert that learned most of them
    owner = {t: np.bincount(expected[test.task == t]).argmax() for t in range(3)}
    assert len(set(owner.values())) == 3
    assert np.mean(expected == np.array([owner[t] for t in test.task])) > 0.9
    # every row the experts learned is counted, not only their buffers
    counted = sum(learner.statistics_.counts_.values())
    assert counted > 2 * sum(len(e.buffer) for e in learner.experts_.values())


def test_auto_keeps_the_router_that_routes_held_out_rows_better(split_digits, tmp_path):
    from clflow.tame.persist import load_tame, save_tame

    learner = TameLearner(ContinualLearner(10), seed=0)  # route_by auto, the default
    run_stream(learner, split_digits, batch_size=32, epochs=2, seed=0)
    X = split_digits.test.X
    learner.route(X)
    choice = learner.route_choices_[-1]
    assert choice["experts"] == 3 and set(choice["scores"]) == {"selector", "statistics"}
    better = choice["scores"]["statistics"] > choice["scores"]["selector"]
    assert learner.routed_by_ == choice["chosen"] == ("statistics" if better else "selector")
    save_tame(tmp_path / "c.pt", learner)
    again, _ = load_tame(tmp_path / "c.pt")
    assert again.routed_by_ == learner.routed_by_ and again.route_choices_ == learner.route_choices_
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
    assert old.route_by == "selector" and old.routed_by_ == "selector"
    X = np.random.default_rng(0).normal(size=(20, old.n_features_in_)).astype(np.float32)
    ids = np.asarray(old.selector_ids_)
    np.testing.assert_array_equal(old.route(X), ids[old.selector_.log_proba(X).argmax(1)])
