"""Three uses of a demonstration bank, each measured against the model alone.

1. retrieval-augmented prediction: blend model probabilities with the k-NN label vote;
2. few-shot: held-out classes predicted from n demonstrations each, no retraining;
3. retrieval replay (plugin in clflow.plugins): rehearse the nearest stored samples.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from clflow.evaluation import (
    RunResult,
    fit_experience,
    label_accuracies,
    run_stream,
    untrained_accuracies,
)
from clflow.retrieval.bank import BankConfig, DemoBank
from clflow.streams import Stream
from clflow.util.progress import Progress

Embed = Callable[[np.ndarray], np.ndarray]


def knn_vote(bank: DemoBank, X: np.ndarray, k: int, n_classes: int) -> np.ndarray:
    """Class distribution from the k nearest demonstrations, weighted by similarity rank
    (1/rank)."""
    _, ids, labels = bank.search(X, k)
    votes = np.zeros((len(X), n_classes))
    weights = 1.0 / np.arange(1, k + 1)
    for j in range(k):
        ok = labels[:, j] >= 0
        votes[np.flatnonzero(ok), labels[ok, j]] += weights[j]
    return votes / np.maximum(votes.sum(1, keepdims=True), 1e-12)


def build_bank(
    X: np.ndarray, y: np.ndarray, embed: Embed, config: BankConfig, meta: dict | None = None
) -> DemoBank:
    Z = embed(X)
    bank = DemoBank(Z.shape[1], config)
    bank.add(Z, y, meta)
    return bank


def experience_votes(stream: Stream, k: int, config: BankConfig) -> np.ndarray:
    """(T, n_test, n_classes): the k-NN vote on every test row over a bank of the raw training
    rows seen through each experience. Raw features never change, so it is the same for every
    learner and seed: computed once, the bank grown by appending each experience."""
    tr, te = stream.train, stream.test
    bank = DemoBank(tr.X.shape[1], config)
    votes = []
    with Progress(stream.n_experiences, "k-NN votes", unit="experiences") as progress:
        for i in range(stream.n_experiences):
            rows = tr.experience == i
            bank.add(tr.X[rows], tr.y[rows], {"experience": tr.experience[rows]})
            votes.append(knn_vote(bank, te.X, k, len(stream.classes)))
            progress.update(1, rows=len(te.y))
    return np.stack(votes)


def blend(
    result: RunResult, votes: np.ndarray, weight: float, stream: Stream
) -> tuple[RunResult, RunResult]:
    """(model alone, blended with the k-NN vote) from a run's kept test probabilities."""
    assert result.proba is not None, "run the stream with keep_proba=True"
    te, T = stream.test, stream.n_experiences
    mixed = (1 - weight) * result.proba[1:] + weight * votes
    R_with = np.array([label_accuracies(m.argmax(1), te, T) for m in mixed])
    batches = np.empty(0, dtype=np.int64)
    return RunResult(result.R, result.b, batches), RunResult(R_with, result.b, batches)


def augmented_run(
    learner,
    stream: Stream,
    *,
    batch_size: int,
    epochs: int,
    seed: int,
    k: int,
    weight: float,
    config: BankConfig,
    embed_with_model: bool,
    votes: np.ndarray | None = None,
) -> tuple[RunResult, RunResult]:
    """Train through the stream; after each experience evaluate the model alone and blended with
    the k-NN vote over a bank of every training row seen so far. Returns (alone, with retrieval).

    On raw features the vote does not depend on the learner: pass `votes` (experience_votes) to
    share it between runs.
    """
    run = dict(batch_size=batch_size, epochs=epochs, seed=seed)
    if not embed_with_model:
        result = run_stream(learner, stream, keep_proba=True, **run)
        if votes is None:
            votes = experience_votes(stream, k, config)
        return blend(result, votes, weight, stream)
    T, n_classes = stream.n_experiences, len(stream.classes)
    b = untrained_accuracies(learner, stream)
    R_alone, R_with = np.zeros((T, T)), np.zeros((T, T))
    tr, te = stream.train, stream.test
    for i in range(T):
        rows = tr.experience == i
        fit_experience(learner, tr.X[rows], tr.y[rows], experience=i, **run)
        # the features drift as the model learns: re-embed every stored row
        seen = tr.experience <= i
        bank = build_bank(tr.X[seen], tr.y[seen], learner.features, config)
        proba = learner.predict_proba(te.X)
        blended = (1 - weight) * proba + weight * knn_vote(
            bank, learner.features(te.X), k, n_classes
        )
        R_alone[i] = label_accuracies(proba.argmax(1), te, T)
        R_with[i] = label_accuracies(blended.argmax(1), te, T)
    batches = np.empty(0, dtype=np.int64)
    return RunResult(R_alone, b, batches), RunResult(R_with, b, batches)


def few_shot(
    stream: Stream,
    embed: Embed,
    held_out: np.ndarray,
    shots: list[int],
    k: int,
    config: BankConfig,
    seed: int,
) -> dict[str, float]:
    """Accuracy on held-out classes' test rows from n demonstrations per class.

    `episode`: a bank of the held-out demonstrations only (n-way choice among them);
    `full_bank`: the same demonstrations added to a bank of every other class's training rows.
    """
    tr, te = stream.train, stream.test
    rng = np.random.default_rng(seed)
    known = ~np.isin(tr.y, held_out)
    test_rows = np.isin(te.y, held_out)
    out: dict[str, float] = {}
    for n in shots:
        demo = np.concatenate(
            [rng.choice(np.flatnonzero(tr.y == c), n, replace=False) for c in held_out]
        )
        for name, rows in (
            ("episode", demo),
            ("full_bank", np.concatenate([np.flatnonzero(known), demo])),
        ):
            bank = build_bank(tr.X[rows], tr.y[rows], embed, config)
            kk = min(k, n) if name == "episode" else k
            vote = knn_vote(bank, embed(te.X[test_rows]), kk, len(stream.classes))
            out[f"{n}shot_{name}_accuracy"] = float(np.mean(vote.argmax(1) == te.y[test_rows]))
    return out
