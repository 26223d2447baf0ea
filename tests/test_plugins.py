import numpy as np
import pytest
import torch

from clflow.plugins import ReplayPlugin


def test_replay_doubles_batch_from_memory():
    plug = ReplayPlugin(memory=4, seed=0)
    X, y = np.ones((3, 2), np.float32), np.array([1, 1, 1])
    assert plug.before_step(X, y)[0].shape == (3, 2)  # empty memory: batch unchanged
    plug.after_step(np.zeros((4, 2), np.float32) + np.arange(4)[:, None], np.array([0, 0, 0, 0]))
    Xb, yb = plug.before_step(X, y)
    assert Xb.shape == (6, 2) and list(yb[:3]) == [1, 1, 1] and list(yb[3:]) == [0, 0, 0]


def test_retrieval_replay_rehearses_nearest_other_class_samples():
    from clflow.retrieval.replay import RetrievalReplayPlugin

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


def test_experience_replay_rehearses_past_experiences_only():
    from clflow.plugins import ExperienceReplayPlugin

    plug = ExperienceReplayPlugin(memory=6, seed=0)
    X, y = np.ones((3, 2), np.float32), np.array([1, 1, 1])
    plug.after_step(X, y)  # a step does not fill the buffer: the experience has not ended
    assert plug.before_step(X, y)[0].shape == (3, 2)
    plug.after_experience(np.zeros((8, 2), np.float32), np.zeros(8, int))
    Xb, yb = plug.before_step(X, y)
    assert Xb.shape == (6, 2) and list(yb[3:]) == [0, 0, 0]


def test_standard_replay_beats_online_replay_on_split_digits():
    """Measured by the issue against Avalanche 0.6.0: standard replay 0.84 ± 0.03 at memory 200."""
    from clflow.baselines.methods import learner_for_method
    from clflow.config import StreamConfig, TrainConfig
    from clflow.evaluation import run_stream
    from clflow.streams import build_stream

    stream = build_stream(StreamConfig(source="digits", experiences=5))
    acc = {}
    for method in ("replay", "replay_online", "finetune"):
        learner = learner_for_method(method, stream, TrainConfig(), seed=0, memory=200)
        acc[method] = run_stream(learner, stream, batch_size=32, epochs=5, seed=0).metrics()[
            "avg_accuracy"
        ]
    assert acc["replay"] >= 0.8 and acc["replay"] > acc["replay_online"] + 0.03 > acc["finetune"]


def _learner(plugin, n_classes=3):
    from clflow.learners import ContinualLearner

    return ContinualLearner(n_classes, hidden=8, plugins=[plugin]).initialize(2)


def test_dark_replay_stores_each_rows_latest_logits():
    from clflow.plugins import DarkReplayPlugin

    plug = DarkReplayPlugin(memory=4, alpha=0.3, seed=0)
    learner = _learner(plug)
    X, y = np.eye(2, dtype=np.float32), np.array([0, 1])
    learner.partial_fit(X, y)
    before = learner.logits(X).detach().numpy()
    learner.partial_fit(X, y)  # the same rows again: their payload is the newer logits
    assert len(plug.buffer) == 2 and plug.buffer.extra.shape == (2, 3)
    order = np.argsort(plug.buffer.X[:, 0])[::-1]  # row [1, 0] first
    assert np.allclose(plug.buffer.extra[order], before, atol=1e-6)


def test_dark_replay_adds_the_logit_and_label_terms():
    from torch import nn

    from clflow.plugins import DarkReplayPlugin

    X, y = np.eye(2, dtype=np.float32), np.array([0, 1])
    for beta in (0.0, 0.5):
        plug = DarkReplayPlugin(memory=2, alpha=0.3, beta=beta, seed=0)
        learner = _learner(plug)
        learner.partial_fit(X, y)
        logits = learner.logits(X)
        plain = nn.functional.cross_entropy(logits, learner.labels(y))
        state = plug.buffer.rng.bit_generator.state
        got = plug.loss(learner, X, y, logits, plain)
        plug.buffer.rng.bit_generator.state = state  # the same replay draws, by hand
        idx = plug.buffer.sample_index(2)
        stored = plug.buffer.extra[idx]
        want = plain + 0.3 * nn.functional.mse_loss(
            learner.logits(plug.buffer.X[idx]), torch.as_tensor(stored)
        )
        if beta:
            Xr, yr = plug.buffer.sample(2)
            want = want + beta * nn.functional.cross_entropy(learner.logits(Xr), learner.labels(yr))
        assert got.item() == pytest.approx(want.item(), rel=1e-6)
        assert got.item() > plain.item()  # the stored logits are not the current ones


def test_er_ace_does_not_push_absent_classes_down():
    from clflow.plugins import AsymmetricReplayPlugin

    plug = AsymmetricReplayPlugin(memory=10, seed=0)
    learner = _learner(plug)
    old = np.array([[1, 0]], np.float32)
    learner.partial_fit(old, np.array([0]))  # class 0 is now in the buffer
    X, y = np.array([[0, 1], [0.5, 1]], np.float32), np.array([1, 2])
    logits = learner.logits(X)
    plug.buffer.sample = lambda n: (old, np.array([0]))  # replay of a class-0 row only
    loss = plug.loss(learner, X, y, logits, None)
    (grad,) = torch.autograd.grad(loss, logits)
    # the incoming batch (classes 1, 2) leaves class 0's logits alone; plain CE would lower them
    assert torch.all(grad[:, 0] == 0) and torch.all(grad[:, 1:].abs().sum(1) > 0)
    plain = torch.nn.functional.cross_entropy(logits, learner.labels(y))
    (plain_grad,) = torch.autograd.grad(plain, logits)
    assert torch.all(plain_grad[:, 0] > 0)


def test_experience_storage_keeps_the_trained_models_logits_at_the_boundary():
    from clflow.plugins import AsymmetricReplayPlugin, DarkReplayPlugin

    X, y = np.eye(2, dtype=np.float32), np.array([0, 1])
    dark = DarkReplayPlugin(memory=4, alpha=0.3, seed=0, storage="experience")
    learner = _learner(dark)
    learner.partial_fit(X, y)
    assert len(dark.buffer) == 0  # nothing stored while the experience trains
    learner.end_experience(X, y)
    order = np.argsort(dark.buffer.y)
    assert np.allclose(dark.buffer.extra[order], learner.logits(X).detach().numpy(), atol=1e-6)
    # ER-ACE (Avalanche's ER_ACE): the rows join before the experience trains, and replay
    # starts with the second experience
    ace = AsymmetricReplayPlugin(memory=4, seed=0, storage="experience")
    learner = _learner(ace)
    learner.begin_experience(X, y)
    assert sorted(ace.buffer.y.tolist()) == [0, 1]
    logits = learner.logits(X)
    assert ace.experiences_ == 0
    plain = logits.sum()
    assert ace.loss(learner, X, y, logits, plain) is plain  # no replay in the first experience
    learner.end_experience(X, y)
    assert ace.loss(learner, X, y, logits, plain) is not plain
