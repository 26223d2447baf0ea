"""The router: the selector's blocks of (expert, class) outputs and its continual training."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from clflow.config import StreamConfig
from clflow.evaluation import run_stream
from clflow.learners import ContinualLearner
from clflow.streams import build_stream
from clflow.tame import TameLearner
from clflow.tame.selector import Selector


def blobs(n_slots: int, classes: int, n: int = 60, seed: int = 0):
    """Well separated blobs: slot s, class c around its own centre."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 6, size=(n_slots, classes, 8))
    slots = np.repeat(np.arange(n_slots), n)
    y = rng.integers(0, classes, len(slots))
    X = centres[slots, y] + rng.normal(0, 0.5, (len(slots), 8))
    return X.astype(np.float32), slots, y


def test_resize_keeps_each_kept_experts_block_of_class_outputs():
    sel = Selector(16, classes=3, seed=0).initialize(8)
    sel.resize([], 3)
    before = sel.head_.weight.detach().clone()
    sel.resize([2, 0], 1)  # keep slots 2 and 0 (in that order), add one
    w = sel.head_.weight.detach()
    assert sel.n_outputs == 3 and w.shape[0] == 9
    assert torch.equal(w[0:3], before[6:9]) and torch.equal(w[3:6], before[0:3])


@pytest.mark.parametrize("classes", [1, 3])
def test_routes_by_the_sum_over_an_experts_classes(classes):
    X, slots, y = blobs(3, 3)
    sel = Selector(32, epochs=60, classes=classes, seed=0).initialize(8)
    sel.resize([], 3)
    sel.fit(X, slots, y)
    logp = sel.log_proba(X)
    assert logp.shape == (len(X), 3)
    assert np.allclose(np.exp(logp).sum(1), 1, atol=1e-5)  # a distribution over experts
    assert np.mean(sel.route(X) == slots) > 0.95


def test_partial_fit_learns_and_its_optimiser_survives_a_checkpoint():
    X, slots, y = blobs(2, 2)
    sel = Selector(32, classes=2, seed=0).initialize(8)
    sel.resize([], 2)
    for _ in range(30):
        sel.partial_fit(X, slots, y)
    assert np.mean(sel.route(X) == slots) > 0.95
    state = copy.deepcopy(sel.get_state())  # as a checkpoint would: no shared tensors
    again = Selector(32, classes=2, seed=0).set_state(state)
    sel.partial_fit(X, slots, y)
    again.partial_fit(X, slots, y)  # same moments: the same step
    assert np.allclose(sel.log_proba(X), again.log_proba(X), atol=1e-6)


@pytest.fixture(scope="module")
def split_digits():
    return build_stream(StreamConfig(source="digits", experiences=3, seed=0))


def test_the_continual_router_trains_the_selector_on_every_batch(split_digits):
    learner = TameLearner(ContinualLearner(10), seed=0, router="continual")
    tr = split_digits.train
    first, second = tr.experience == 0, tr.experience == 1
    for start in range(0, first.sum(), 32):
        learner.partial_fit(tr.X[first][start : start + 32], tr.y[first][start : start + 32])
    assert learner.router_.selector_.opt_ is None  # one expert: nothing to tell apart yet, no step
    for _ in range(3):
        for start in range(0, second.sum(), 32):
            learner.partial_fit(tr.X[second][start : start + 32], tr.y[second][start : start + 32])
    assert learner.n_experts == 2 and learner.router_.selector_.opt_ is not None
    # before any refit on the buffers, the selector already tells the two tasks apart
    routed = np.asarray(learner.router_.ids_)[learner.router_.selector_.route(tr.X[first | second])]
    assert np.mean(routed == np.where(tr.experience[first | second] == 0, 0, 1)) > 0.9


@pytest.mark.parametrize("router", ["continual", "buffer"])
@pytest.mark.parametrize("targets", ["class", "expert"])
def test_every_router_routes_held_out_rows_to_their_task(split_digits, router, targets):
    learner = TameLearner(ContinualLearner(10), seed=0, router=router, selector_targets=targets)
    run_stream(learner, split_digits, batch_size=32, epochs=3, seed=0)
    te = split_digits.test
    assert learner.n_experts == 3
    assert np.mean(learner.route(te.X) == te.task) > 0.9  # experts are spawned in task order


def _first_experience(learner: TameLearner, stream) -> None:
    tr = stream.train
    rows = tr.experience == 0
    for start in range(0, rows.sum(), 32):
        learner.partial_fit(tr.X[rows][start : start + 32], tr.y[rows][start : start + 32])


def test_class_targets_learn_from_the_first_expert_and_steps_are_counted(split_digits):
    """With (expert, class) targets one expert already has classes to tell apart: the
    selector learns from the first batch, `selector_steps` steps per learned batch."""
    steps = {}
    for n in (1, 2):
        learner = TameLearner(
            ContinualLearner(10),
            seed=0,
            router="continual",
            selector_targets="class",
            selector_steps=n,
        )
        _first_experience(learner, split_digits)
        assert learner.n_experts == 1 and learner.router_.selector_.opt_ is not None
        adam = learner.router_.selector_.opt_.state_dict()["state"]
        steps[n] = int(next(iter(adam.values()))["step"])
    assert steps[1] == learner.experts_[0].n_batches and steps[2] == 2 * steps[1]


@pytest.mark.parametrize(
    ("expert_net", "selector_net", "conv"),
    [
        ("cnn", "expert", True),
        ("mlp", "cnn", True),
        ("cnn", "mlp", False),
        ("mlp", "expert", False),
    ],
)
def test_the_selector_network_follows_the_experts_unless_set(expert_net, selector_net, conv):
    """`selector_backbone`: the experts' network by default; a Conv1d selector over MLP experts
    (what routes MNIST-1D, see bench/tame.py's routing ceiling), or the reverse."""
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(64, 40)).astype(np.float32), rng.integers(0, 4, 64)
    expert = ContinualLearner(4, backbone=expert_net, shape=(1, 40), hidden=16)
    learner = TameLearner(
        expert, seed=0, selector_hidden=16, selector_backbone=selector_net
    ).partial_fit(X, y)
    selector = learner.router_.selector_.body_.modules()
    assert any(isinstance(m, torch.nn.Conv1d) for m in selector) == conv
    experts = learner.experts_[0].learner.model_.modules()
    assert any(isinstance(m, torch.nn.Conv1d) for m in experts) == (expert_net == "cnn")


@pytest.mark.slow  # trains a CNN selector on MNIST-1D
def test_a_conv1d_selector_routes_mnist1d_where_an_mlp_cannot():
    """The same 100 buffered rows per task of Split-MNIST-1D: the MLP selector routes ~0.4 of
    the test rows to their task, the Conv1d one ~0.8 (bench/tame.py: the MLP's ceiling with all
    rows is 0.63, below the 0.65 target of issue 13)."""
    stream = build_stream(StreamConfig(source="mnist1d", experiences=5, seed=0))
    tr, te = stream.train, stream.test
    rng = np.random.default_rng(0)
    rows = np.concatenate(
        [rng.choice(np.flatnonzero(tr.task == t), 100, replace=False) for t in range(5)]
    )
    routed = {}
    for net in ("mlp", "cnn"):
        sel = Selector(
            512, epochs=100, seed=0, normalizer=stream.normalizer, backbone=net, shape=stream.shape
        ).initialize(stream.n_features)
        sel.resize([], 5)
        sel.fit(tr.X[rows], tr.task[rows], tr.y[rows])
        routed[net] = np.mean(sel.route(te.X) == te.task)
    assert routed["cnn"] >= 0.65 and routed["cnn"] > routed["mlp"] + 0.2, routed
