"""Online pruning: experts left behind and the selector keep a bounded share of weights."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from clflow.config import StreamConfig, TrainConfig
from clflow.evaluation import run_stream
from clflow.learners import ContinualLearner, learner_from_config
from clflow.streams import build_stream
from clflow.tame import TameLearner
from clflow.tame.pruning import count_nonzero, count_parameters, prune_weights


def test_prune_zeroes_the_smallest_weights_of_each_layer_and_no_bias():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(20, 30), nn.ReLU(), nn.Linear(30, 4))
    before = copy.deepcopy(net)
    prune_weights(net, 0.8)
    for old, new in ((before[0], net[0]), (before[2], net[2])):
        kept = new.weight != 0
        assert kept.float().mean() == pytest.approx(0.2, abs=0.01)
        # the kept weights are the largest, unchanged
        assert old.weight.abs()[kept].min() >= old.weight.abs()[~kept].max()
        assert torch.equal(new.weight[kept], old.weight[kept])
        assert torch.equal(new.bias, old.bias)
    assert not any("orig" in k or "mask" in k for k in net.state_dict())  # plain weights


def test_fine_tuning_keeps_pruned_weights_at_zero_and_trains_the_rest():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(10, 16), nn.ReLU(), nn.Linear(16, 2))
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)  # made before pruning, as an expert's
    X, y = torch.randn(64, 10), torch.randint(0, 2, (64,))
    losses = []

    def finetune():
        for _ in range(50):
            loss = nn.functional.cross_entropy(net(X), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())

    prune_weights(net, 0.5, finetune=finetune)
    assert losses[-1] < losses[0]  # the optimiser still drives the (same) parameters
    assert count_nonzero(net) <= count_parameters(net) - 0.5 * (160 + 32) + 1


@pytest.fixture(scope="module")
def dense_and_pruned():
    stream = build_stream(StreamConfig(source="digits", experiences=5, seed=0))
    runs = {}
    for sparsity in (0.0, 0.8):  # experts 80 % sparse, the selector 50 % (the defaults)
        learner = TameLearner(
            learner_from_config(stream, TrainConfig(), 0),  # the pipeline's expert
            seed=0,
            prune_sparsity=sparsity,
            selector_sparsity=sparsity and 0.5,
            # what `auto` picks on Split-Digits (tests/tame/test_learner.py), without its trials
            selector_backbone="mlp",
        )
        runs[sparsity] = learner, run_stream(learner, stream, batch_size=32, epochs=5, seed=0)
    return stream, runs


@pytest.mark.slow  # with the next: two TAME runs on Split-Digits (the fixture)
def test_five_experts_fit_in_twice_one_dense_expert(dense_and_pruned):
    _, runs = dense_and_pruned
    learner, _ = runs[0.8]
    counts = learner.parameter_counts()
    assert learner.n_experts == 5
    assert counts["expert_nonzero_parameters"] <= 2 * counts["dense_expert_parameters"]
    dense = runs[0.0][0].parameter_counts()
    assert dense["expert_nonzero_parameters"] == 5 * dense["dense_expert_parameters"]
    assert counts["selector_nonzero_parameters"] < dense["selector_nonzero_parameters"]


@pytest.mark.slow  # the same two TAME runs
def test_a_pruned_expert_predicts_what_it_did_dense(dense_and_pruned):
    """Same seed, same batches: the pruned run takes the same decisions, and each expert
    left behind (pruned) agrees with its dense twin on its task's test rows."""
    stream, runs = dense_and_pruned
    (dense, dense_run), (pruned, pruned_run) = runs[0.0], runs[0.8]
    assert [(e.batch, e.kind) for e in pruned.events_] == [(e.batch, e.kind) for e in dense.events_]
    te = stream.test
    for eid in pruned.experts_:
        if eid == pruned.active_:
            continue
        rows = te.task == eid
        a = pruned.experts_[eid].learner.predict(te.X[rows])
        b = dense.experts_[eid].learner.predict(te.X[rows])
        assert np.mean(a == b) >= 0.97
        buffer = pruned.experts_[eid].buffer.X  # the same rows in both runs
        a, b = (
            pruned.experts_[eid].learner.predict(buffer),
            dense.experts_[eid].learner.predict(buffer),
        )
        assert np.mean(a == b) >= pruned.prune_agreement
    loss = dense_run.metrics()["avg_accuracy"] - pruned_run.metrics()["avg_accuracy"]
    assert loss <= 0.01  # the stated bound (README, bench/tame.py)


def agreement(expert, sparsity: float) -> float:
    """Share of the expert's buffer on which a copy pruned to `sparsity` answers as it does."""
    pruned = copy.deepcopy(expert.learner)
    prune_weights(pruned.model_, sparsity)
    X = expert.buffer.X
    return float(np.mean(pruned.predict(X) == expert.learner.predict(X)))


def test_an_expert_that_would_change_its_answers_is_pruned_less():
    """A narrow expert (16 units) cannot lose 80 % of its weights and keep every answer: the
    chosen sparsity is the largest step that keeps them, and one step more would not."""
    stream = build_stream(StreamConfig(source="digits", experiences=2, seed=0))
    learner = TameLearner(
        ContinualLearner(10, hidden=16), seed=0, prune_sparsity=0.8, prune_agreement=1.0
    )
    run_stream(learner, stream, batch_size=32, epochs=2, seed=0)
    expert = next(e for e in learner.experts_.values() if e.id != learner.active_)
    dense = copy.deepcopy(expert)
    chosen = learner._prune(dense)
    assert chosen < 0.8
    assert agreement(expert, chosen + 0.2) < 1.0
    if chosen > 0:
        assert agreement(expert, chosen) == 1.0
        assert count_nonzero(dense.learner.model_) < count_parameters(dense.learner.model_)
