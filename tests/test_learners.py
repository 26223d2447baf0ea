import numpy as np
import pytest
import torch

from clflow.learners import ContinualLearner, NotFittedError


def blobs(seed=0, n=200):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    X = (rng.normal(size=(n, 4)) * 0.3 + np.eye(3, 4)[y] * 3).astype(np.float32)
    return X, y


def test_predict_before_fit_raises():
    with pytest.raises(NotFittedError):
        ContinualLearner(3).predict(np.zeros((1, 4), np.float32))


def test_partial_fit_learns_and_returns_self():
    X, y = blobs()
    learner = ContinualLearner(3, hidden=16, lr=1e-2, seed=0)
    for _ in range(30):
        assert learner.partial_fit(X, y) is learner
    assert (learner.predict(X) == y).mean() > 0.95
    assert learner.n_features_in_ == 4 and learner.n_steps_ == 30
    assert learner.predict_proba(X[:5]).sum(1) == pytest.approx(np.ones(5), abs=1e-5)


def test_seed_makes_training_deterministic():
    X, y = blobs()
    a, b = (ContinualLearner(3, hidden=8, seed=1).partial_fit(X, y) for _ in range(2))
    assert np.array_equal(a.predict_proba(X), b.predict_proba(X))


def test_cnn_on_1d_signals_uses_conv1d():
    X, y = np.random.default_rng(0).normal(size=(8, 40)).astype(np.float32), np.arange(8) % 3
    learner = ContinualLearner(3, backbone="cnn", shape=(1, 40), hidden=8).partial_fit(X, y)
    assert any(isinstance(m, torch.nn.Conv1d) for m in learner.model_.modules())
    assert learner.predict_proba(X).shape == (8, 3) and learner.features(X).shape == (8, 8)
    with pytest.raises(ValueError, match="signal shape"):
        ContinualLearner(3, backbone="cnn", shape=(1, 39)).partial_fit(X, y)


def test_cnn_needs_a_matching_image_shape():
    X = np.zeros((2, 64), np.float32)
    ContinualLearner(3, backbone="cnn", shape=(1, 8, 8), hidden=8).partial_fit(X, np.array([0, 1]))
    with pytest.raises(ValueError, match="image shape"):
        ContinualLearner(3, backbone="cnn", shape=None).partial_fit(X, np.array([0, 1]))
