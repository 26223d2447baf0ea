"""Prefect flow `clflow-federated`: clients as mapped tasks, a server merging prototypes each round.

The default task runner is a thread pool; `--runner dask` (params `federated.runner: dask`) runs the
clients on a Dask cluster through prefect-dask: a local `distributed` cluster, or `--address` of an
existing scheduler. The DVC stage `federated` (stages/federated.py) runs this flow through
`run_rounds`, which also runs the rounds on Flower (`federated.engine: flower`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from prefect import flow, get_run_logger, task, unmapped
from prefect.task_runners import ThreadPoolTaskRunner

from clflow.config import FederatedConfig
from clflow.federated import ClientUpdate, Encoder, PrototypeServer, client_update, make_encoder
from clflow.federated.simulate import local_accuracies, partition, round_record
from clflow.streams import Stream
from clflow.util.progress import Progress


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
    with Progress(len(rounds), "federated rounds", unit="rounds") as progress:
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
            history.append(
                round_record(
                    r, server, stream, encoder, np.concatenate(all_rows), len(clients), report
                )
            )
            logger.info(
                "round %d: %d clients, merged accuracy %.3f",
                r,
                len(clients),
                history[-1]["merged_accuracy"],
            )
            progress.update(1, rows=sum(len(rows) for rows in clients.values()))
    return {
        "history": history,
        "server": server,
        "local_accuracies": local_accuracies(stream, rounds, encoder, metric),
        "encoder": encoder,
    }


def task_runner(runner: str, address: str = ""):
    """Thread pool by default; prefect-dask's DaskTaskRunner for `dask` (local cluster or a
    scheduler address)."""
    if runner == "thread":
        return ThreadPoolTaskRunner()
    from prefect_dask import DaskTaskRunner

    if address:
        from clflow.util.services import default_timeout, wait_for_port

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


def run_rounds(
    stream: Stream,
    cfg: FederatedConfig,
    encoder_path: str,
    flower_dir: Path,
    params: str | Path = "params.yaml",
) -> dict:
    """The rounds on the configured engine: history, merged server, local accuracies, encoder.
    (`params`: the file `cfg` came from, named when it asks for more than the machine runs.)"""
    if cfg.engine in ("flower", "flower-sim"):
        from clflow.federated.flower.engine import check_clients, federated_on_flower

        if cfg.engine == "flower":  # one SuperNode process per client
            check_clients(cfg.clients, params)
        rounds = partition(stream, cfg.clients, cfg.overlap, cfg.seed)
        spec = (cfg.encoder, cfg.seed, encoder_path)
        return federated_on_flower(
            stream, rounds, cfg.clients, spec, cfg.metric, flower_dir, engine=cfg.engine
        )
    # a bad encoder file is one line here, not a failed flow run's traceback
    make_encoder(cfg.encoder, stream.n_features, cfg.seed, encoder_path)
    run = federated.with_options(task_runner=task_runner(cfg.runner, cfg.address))
    return run(
        stream,
        n_clients=cfg.clients,
        overlap=cfg.overlap,
        encoder_kind=cfg.encoder,
        metric=cfg.metric,
        seed=cfg.seed,
        group_size=cfg.group_size,
        encoder_path=encoder_path,
    )
