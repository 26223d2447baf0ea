"""Benchmark federated prototype merging; prints a markdown table.

    python bench/federated.py [--clients 10 100 1000] [--runners thread dask]

Each simulated client holds 2 of 100 classes with 20-80 rows of 64 features (uneven).
Client updates run as mapped Prefect tasks (flows/federated.py's client task) on the
thread pool or on a local Dask cluster through prefect-dask; then the server merges.
"Merge" is the time from all updates in hand to merged prototypes (target: 100
clients < 5 s). Peak memory of the merge is measured with tracemalloc.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
from prefect import flow, unmapped

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import cloudpickle  # noqa: E402

import flows.federated as fed  # noqa: E402
from clflow.federated import Encoder, PrototypeServer  # noqa: E402

cloudpickle.register_pickle_by_value(fed)
N_CLASSES, DIM = 100, 64


def client_data(n: int, seed: int = 0) -> tuple[list[np.ndarray], list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    Xs, ys = [], []
    for _ in range(n):
        rows = int(rng.integers(20, 81))
        ys.append(rng.choice(rng.choice(N_CLASSES, 2, replace=False), rows))
        Xs.append(rng.normal(size=(rows, DIM)).astype(np.float32) + ys[-1][:, None] % 7)
    return Xs, ys


@flow(name="bench-federated-clients")
def clients_flow(Xs: list, ys: list, encoder: Encoder, group_size: int = 1) -> list:
    names = fed.groups([f"client-{i:04d}" for i in range(len(Xs))], group_size)
    futures = fed.client_task.map(
        names,
        0,
        fed.groups(Xs, group_size),
        fed.groups(ys, group_size),
        unmapped(encoder),
        [len(g) - 1 for g in names],
    )
    return [u for f in futures for u in f.result()]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clients", type=int, nargs="+", default=[10, 100, 1000])
    parser.add_argument("--runners", nargs="+", default=["thread", "dask"])
    parser.add_argument("--group", type=int, default=1, help="clients per Prefect task (default 1)")
    args = parser.parse_args()
    encoder = Encoder("raw", DIM)
    clients_flow(*client_data(2), encoder)  # warm-up: starts the ephemeral Prefect API, not timed
    rows = []
    for n in args.clients:
        Xs, ys = client_data(n)
        for runner in args.runners:
            t0 = time.perf_counter()
            updates = clients_flow.with_options(task_runner=fed.task_runner(runner))(
                Xs, ys, encoder, args.group
            )
            client_s = time.perf_counter() - t0
            server = PrototypeServer(DIM, N_CLASSES, encoder.hash)
            tracemalloc.start()
            t0 = time.perf_counter()
            report = server.merge(updates)
            merge_s = time.perf_counter() - t0
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
            assert report.accepted == n
            rows.append((n, f"{runner}, {args.group}/task", client_s, merge_s, peak))
            print(f"  {n} clients on {runner}: done", file=sys.stderr)
    print(
        "\n| clients | runner, clients per task | client tasks (Prefect), s "
        "| merge after arrival, ms | merge peak memory, KiB |"
    )
    print("|---|---|---|---|---|")
    for n, runner, client_s, merge_s, peak in rows:
        print(f"| {n} | {runner} | {client_s:.1f} | {merge_s * 1000:.1f} | {peak / 1024:.0f} |")
    print(f"\nprocess peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
