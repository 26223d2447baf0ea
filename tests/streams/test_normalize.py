from dataclasses import replace

import numpy as np
import pytest
import torch

from clflow.config import StreamConfig, TrainConfig
from clflow.learners import learner_from_config
from clflow.streams import build_stream
from clflow.streams.normalize import Normalizer


@pytest.fixture(scope="module")
def digits():
    return build_stream(StreamConfig(source="digits", experiences=5))


def test_fitted_on_the_first_experience_only(digits):
    first = digits.train.X[digits.train.experience == 0]
    assert np.allclose(digits.normalizer.mean, first.mean(0), atol=1e-5)
    # a later experience does not move it
    assert not np.allclose(digits.normalizer.mean, digits.train.X.mean(0), atol=1e-3)
    assert digits.train.X.max() == 16.0  # the stream keeps raw pixel counts


def test_std_floor_never_amplifies_beyond_the_typical_feature():
    rng = np.random.default_rng(0)
    X = np.column_stack(
        [rng.normal(5, 2, 500), rng.normal(0, 3, 500), np.zeros(500), rng.normal(0, 1e-3, 500)]
    )
    n = Normalizer.fit(X)
    assert n.std[0] == pytest.approx(2, rel=0.1) and n.std[1] == pytest.approx(3, rel=0.1)
    assert (
        n.std[2] == n.std[3] == pytest.approx(np.median(X[:, :2].std(0).tolist() + [X[:, 3].std()]))
    )
    Z = n.transform(X)
    assert np.allclose(Z[:, 1].std(), 1, atol=0.05) and np.abs(Z[:, 3]).max() < 0.01


def test_none_keeps_features_as_they_are():
    assert build_stream(StreamConfig(source="digits", normalize="none")).normalizer is None


def test_model_scales_its_own_input(digits):
    """A learner on raw features predicts exactly what an unscaled one predicts on pre-scaled
    features."""
    raw = learner_from_config(digits, TrainConfig(hidden=16), seed=0).initialize(64)
    plain = learner_from_config(
        replace(digits, normalizer=None), TrainConfig(hidden=16), seed=0
    ).initialize(64)
    X = digits.test.X[:50]
    assert np.allclose(
        raw.predict_proba(X), plain.predict_proba(digits.normalizer.transform(X)), atol=1e-5
    )
    state = raw.model_.state_dict()  # the scaling is saved with the weights
    assert torch.equal(state["0.0.mean"], torch.as_tensor(digits.normalizer.mean))
