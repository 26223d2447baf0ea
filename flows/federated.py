"""Prefect flow `clflow-federated`: clients as mapped tasks, a server merging prototypes each round.

The default task runner is a thread pool; `--runner dask` (params `federated.runner: dask`) runs the
clients on a Dask cluster through prefect-dask: a local `distributed` cluster, or `--address` of an
existing scheduler. The DVC stage `federated` (stages/federated.py) runs this flow.
"""

from __future__ import annotations

import numpy as np
from prefect import flow, get_run_logger, task, unmapped
from prefect.task_runners import ThreadPoolTaskRunner

from clflow.federated import ClientUpdate, Encoder, PrototypeServer, client_update
from clflow.federated.simulate import accuracy_on_seen, central_server, local_accuracy, partition
from clflow.streams import Stream


@task(name="clients", task_run_name="round-{round_}-{clients[0]}+{n_more}")
def client_task(
    clients: list[str],
    round_: int,
    Xs: list[np.ndarray],
    ys: list[np.ndarray],
    encoder: Encoder,
    n_more: int = 0,
) -> list[ClientUpdate]:
    """Updates of a group of clients (prototype sums and counts of their new rows); a group of one
    by default.

    Grouping bounds the number of Prefect tasks, so thousands of clients scale out on Dask.
    """
    return [
        client_update(X, y, encoder, encoder.hash, c, round_) for c, X, y in zip(clients, Xs, ys)
    ]


def groups(items: list, size: int) -> list[list]:
    return [items[i : i + size] for i in range(0, len(items), size)]


@flow(name="clflow-federated")
def federated(
    stream: Stream,
    n_clients: int = 10,
    overlap: int = 1,
    encoder_kind: str = "raw",
    metric: str = "cosine",
    seed: int = 0,
    group_size: int = 1,
    encoder_path: str = "models/encoder/encoder.npz",
) -> dict:
    """Federated class-incremental rounds; returns per-round accuracies and the merged server.

    `encoder_kind` trained: the clients embed with the encoder at `encoder_path` (its id is
    the file's hash)."""
    logger = get_run_logger()
    encoder = make_encoder(encoder_kind, stream.n_features, seed, encoder_path)
    server = PrototypeServer(encoder.dim, len(stream.classes), encoder.hash, metric)
    rounds, history, all_rows = partition(stream, n_clients, overlap, seed), [], []
    tr = stream.train
    for r, clients in enumerate(rounds):
        names = groups(list(clients), group_size)
        futures = client_task.map(
            names,
            r,
            groups([tr.X[rows] for rows in clients.values()], group_size),
            groups([tr.y[rows] for rows in clients.values()], group_size),
            unmapped(encoder),
            [len(g) - 1 for g in names],
        )
        report = server.merge(u for f in futures for u in f.result())
        all_rows += list(clients.values())
        seen = np.unique(tr.y[np.concatenate(all_rows)])
        central = central_server(stream, np.concatenate(all_rows), encoder, encoder.hash, metric)
        history.append(
            {
                "round": r,
                "clients": len(clients),
                "accepted": report.accepted,
                "rejected": len(report.rejected),
                "merged_accuracy": accuracy_on_seen(server, stream, encoder, seen),
                "central_accuracy": accuracy_on_seen(central, stream, encoder, seen),
                "max_prototype_diff": float(
                    np.abs(server.prototypes() - central.prototypes()).max()
                ),
            }
        )
        logger.info(
            "round %d: %d clients, merged accuracy %.3f",
            r,
            len(clients),
            history[-1]["merged_accuracy"],
        )
    locals_ = [
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
    return {"history": history, "server": server, "local_accuracies": locals_, "encoder": encoder}


def make_encoder(kind: str, n_features: int, seed: int, path: str) -> Encoder:
    """The shared encoder: raw, random (seeded) or trained (read from `path`)."""
    if kind != "trained":
        return Encoder(kind, n_features, seed=seed)
    from clflow.federated.encoder import load_encoder

    weights, weights_id = load_encoder(path)
    return Encoder("trained", n_features, weights=weights, weights_id=weights_id)


def task_runner(runner: str, address: str = ""):
    """Thread pool by default; prefect-dask's DaskTaskRunner for `dask` (local cluster or a
    scheduler address)."""
    if runner == "thread":
        return ThreadPoolTaskRunner()
    from prefect_dask import DaskTaskRunner

    if address:
        from clflow.services import default_timeout, wait_for_port

        # a scheduler that does not answer: one line in bounded time, not Dask's traceback
        wait_for_port(address, default_timeout(), "the Dask scheduler (federated.address)")
        return DaskTaskRunner(address=address)
    return DaskTaskRunner(
        cluster_kwargs={
            "n_workers": 2,
            "threads_per_worker": 1,
            "processes": True,
            "dashboard_address": None,
        }
    )
