"""Federated class-incremental simulation: which client holds which rows in which round, and
scoring."""

from __future__ import annotations

import numpy as np

from clflow.federated.faults import Fault, client_name, corrupt
from clflow.federated.protocol import Encoder, MergeReport, PrototypeServer, client_update
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
        rounds.append({client_name(k): np.concatenate(v) for k, v in sorted(held.items())})
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


def round_record(
    r: int,
    server: PrototypeServer,
    stream: Stream,
    encoder: Encoder,
    rows_so_far: np.ndarray,
    clients: int,
    report: MergeReport,
) -> dict:
    """What round r did: merged and central accuracy on the classes seen so far, and how far
    the merged prototypes are from the centrally computed ones."""
    seen = np.unique(stream.train.y[rows_so_far])
    central = central_server(stream, rows_so_far, encoder, encoder.hash, server.metric)
    return {
        "round": r,
        "clients": clients,
        "accepted": report.accepted,
        "rejected": len(report.rejected),
        "merged_accuracy": accuracy_on_seen(server, stream, encoder, seen),
        "central_accuracy": accuracy_on_seen(central, stream, encoder, seen),
        "max_prototype_diff": float(np.abs(server.prototypes() - central.prototypes()).max()),
    }


def local_accuracies(
    stream: Stream, rounds: list[dict[str, np.ndarray]], encoder: Encoder, metric: str
) -> list[float]:
    """Each client alone, on every class seen by anyone."""
    seen = np.unique(stream.train.y[np.concatenate([r for rd in rounds for r in rd.values()])])
    return [
        local_accuracy(
            stream,
            np.concatenate([rd[c] for rd in rounds if c in rd]),
            encoder,
            encoder.hash,
            metric,
            seen,
        )
        for c in sorted({c for rd in rounds for c in rd})
    ]


def merge_in_process(
    stream: Stream,
    rounds: list[dict[str, np.ndarray]],
    encoder: Encoder,
    metric: str,
    faults: dict[int, Fault] | None = None,
) -> tuple[PrototypeServer, list[MergeReport]]:
    """The same clients' updates merged here, round by round in client order: the reference a
    distributed run (Flower) must reproduce, faulty clients included."""
    server = PrototypeServer(encoder.dim, len(stream.classes), encoder.hash, metric)
    names = {client_name(k): f for k, f in (faults or {}).items()}
    tr, reports, previous = stream.train, [], {}
    for r, clients in enumerate(rounds):
        updates = []
        for c, rows in clients.items():
            if names.get(c) == "crash":
                continue  # it sends no update
            honest = client_update(tr.X[rows], tr.y[rows], encoder, encoder.hash, c, r)
            updates.append(corrupt(honest, names.get(c, ""), previous.get((c, r - 1))))
            previous[(c, r)] = honest
        reports.append(server.merge(updates))
    return server, reports


def novel_accuracy(stream: Stream, rows: np.ndarray, novel: np.ndarray, encoder: Encoder) -> float:
    """Nearest prototype (cosine) of the novel classes' train `rows`, scored on their test rows:
    what an encoder is for, classes it never saw."""
    server = central_server(stream, rows, encoder, encoder.hash, "cosine")
    return accuracy_on_seen(server, stream, encoder, novel)
