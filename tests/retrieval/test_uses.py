import numpy as np
import pytest

from clflow.config import StreamConfig, TrainConfig
from clflow.learners import learner_from_config
from clflow.retrieval import BankConfig, DemoBank
from clflow.retrieval.uses import augmented_run, few_shot, knn_vote
from clflow.streams import build_stream


@pytest.fixture(scope="module")
def stream():
    return build_stream(StreamConfig(source="digits", experiences=3, seed=0))


def test_knn_vote_weights_by_rank():
    bank = DemoBank(2, BankConfig(metric="l2"))
    bank.add(np.array([[0.0, 0.0], [1.0, 0.0], [5.0, 0.0]]), np.array([0, 1, 1]))
    vote = knn_vote(bank, np.array([[0.1, 0.0]]), k=3, n_classes=3)
    # ranks 1, 2, 3 weigh 1, 1/2, 1/3: class 0 gets 1, class 1 gets 5/6
    assert vote[0] == pytest.approx(np.array([1, 5 / 6, 0]) / (11 / 6))


def test_retrieval_lifts_finetune_on_split_digits(stream):
    learner = learner_from_config(stream, TrainConfig(), seed=0)
    alone, blended = augmented_run(
        learner,
        stream,
        batch_size=32,
        epochs=2,
        seed=0,
        k=5,
        weight=0.5,
        config=BankConfig(),
        embed_with_model=False,
    )
    a, w = alone.metrics(), blended.metrics()
    assert (
        w["avg_accuracy"] > a["avg_accuracy"] + 0.3
    )  # kNN over stored digits recovers forgotten classes
    assert w["forgetting"] < a["forgetting"]
    assert np.allclose(alone.b, blended.b)


def test_model_embeddings_work_too(stream):
    learner = learner_from_config(stream, TrainConfig(hidden=32), seed=0)
    _, blended = augmented_run(
        learner,
        stream,
        batch_size=32,
        epochs=1,
        seed=0,
        k=3,
        weight=0.5,
        config=BankConfig(),
        embed_with_model=True,
    )
    assert 0 <= blended.metrics()["avg_accuracy"] <= 1


def test_few_shot_on_held_out_classes(stream):
    held = np.unique(stream.train.y[stream.train.experience == 2])
    out = few_shot(stream, lambda X: X, held, [1, 5], k=5, config=BankConfig(), seed=0)
    assert set(out) == {
        "1shot_episode_accuracy",
        "1shot_full_bank_accuracy",
        "5shot_episode_accuracy",
        "5shot_full_bank_accuracy",
    }
    assert (
        out["5shot_episode_accuracy"] > 1.0 / len(held) + 0.2
    )  # well above chance among held-out classes
    assert out["5shot_full_bank_accuracy"] >= out["1shot_full_bank_accuracy"]


@pytest.mark.parametrize("index", ["flat", "ivf"])
def test_raw_bank_grows_by_appending(stream, monkeypatch, index):
    """Raw embeddings: each experience is appended to one bank; only IVF's first add trains it."""
    rebuilds = []
    orig = DemoBank._rebuild
    monkeypatch.setattr(
        DemoBank, "_rebuild", lambda self, kind, X: (rebuilds.append(len(X)), orig(self, kind, X))
    )
    learner = learner_from_config(stream, TrainConfig(hidden=16), seed=0)
    augmented_run(
        learner,
        stream,
        batch_size=64,
        epochs=1,
        seed=0,
        k=3,
        weight=0.5,
        config=BankConfig(index=index),
        embed_with_model=False,
    )
    first = int((stream.train.experience == 0).sum())
    assert rebuilds == ([] if index == "flat" else [first])
