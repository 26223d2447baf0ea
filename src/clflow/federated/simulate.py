"""Federated class-incremental simulation: which client holds which rows in which round, and
scoring."""

from __future__ import annotations

import numpy as np

from clflow.federated.protocol import PrototypeServer, client_update
from clflow.streams import Stream


def partition(
    stream: Stream, n_clients: int, overlap: int, seed: int
) -> list[dict[str, np.ndarray]]:
    """Round r reveals experience r's classes. Each class goes to `overlap` random clients,
    which split its rows unevenly (Dirichlet shares).

    Returns {client: train row indices} per round.
    """
    rng = np.random.default_rng(seed)
    tr = stream.train
    rounds = []
    for r in range(stream.n_experiences):
        rows_r = np.flatnonzero(tr.experience == r)
        held: dict[int, list[np.ndarray]] = {}
        for c in np.unique(tr.y[rows_r]):
            owners = rng.choice(n_clients, size=min(overlap, n_clients), replace=False)
            rows_c = rng.permutation(rows_r[tr.y[rows_r] == c])
            cuts = (np.cumsum(rng.dirichlet(np.ones(len(owners))))[:-1] * len(rows_c)).astype(int)
            for owner, part in zip(owners, np.split(rows_c, cuts)):
                if len(part):
                    held.setdefault(int(owner), []).append(part)
        rounds.append({f"client-{k:03d}": np.concatenate(v) for k, v in sorted(held.items())})
    return rounds


def accuracy_on_seen(server: PrototypeServer, stream: Stream, encode, seen: np.ndarray) -> float:
    """Accuracy on the test rows of every class seen by any client so far."""
    rows = np.isin(stream.test.y, seen)
    return float(np.mean(server.predict(encode(stream.test.X[rows])) == stream.test.y[rows]))


def central_server(
    stream: Stream, rows: np.ndarray, encode, encoder_hash: str, metric: str
) -> PrototypeServer:
    """Prototypes computed centrally from the same rows (the reference for the merge)."""
    Z = encode(stream.train.X[:1])
    server = PrototypeServer(Z.shape[1], len(stream.classes), encoder_hash, metric)
    server.merge(
        [
            client_update(
                stream.train.X[rows], stream.train.y[rows], encode, encoder_hash, "central", 0
            )
        ]
    )
    return server


def local_accuracy(
    stream: Stream, rows: np.ndarray, encode, encoder_hash: str, metric: str, seen: np.ndarray
) -> float:
    """A client alone: its own prototypes, scored on all classes seen by anyone."""
    return accuracy_on_seen(
        central_server(stream, rows, encode, encoder_hash, metric), stream, encode, seen
    )
