import numpy as np
import torch

from clflow.learners import ContinualLearner
from clflow.lingo.targets import random_targets
from clflow.models import TargetHead


def test_target_head_is_invariant_to_feature_scale():
    torch.manual_seed(0)
    head = TargetHead(16, torch.as_tensor(random_targets(5, 8, 0)))
    z = torch.randn(20, 16)
    for c in (0.01, 3.0, 1000.0):
        assert torch.equal(head(z).argmax(1), head(c * z).argmax(1))
        assert torch.allclose(head(z), head(c * z), atol=1e-4)


def test_targets_stay_frozen_while_training():
    T = random_targets(3, 8, 1)
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(64, 4)).astype(np.float32), rng.integers(0, 3, 64)
    learner = ContinualLearner(3, hidden=16, targets=T, seed=0)
    for _ in range(5):
        learner.partial_fit(X, y)
    head = learner.model_[1]
    assert np.allclose(head.targets.numpy(), T) and "targets" not in dict(head.named_parameters())


def test_masked_head_never_predicts_unseen_classes():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(64, 4)).astype(np.float32)
    learner = ContinualLearner(
        5, hidden=16, targets=random_targets(5, 8, 0), mask_unseen=True, seed=0
    )
    learner.partial_fit(X, np.array([0, 2] * 32))
    assert set(learner.predict(rng.normal(size=(200, 4)).astype(np.float32))) <= {0, 2}
