"""Benchmark federated prototype merging; prints a markdown table.

    python bench/federated.py [--clients 10 100 1000] [--runners thread dask]
    python bench/federated.py --encoders [--seeds 0 1 2]   # raw / random / trained encoders
    python bench/federated.py --flower --clients 10 30     # Flower on loopback (.venv-flower)
    python bench/federated.py --engines flower flower-sim --clients 10 100 1000

Each simulated client holds 2 of 100 classes with 20-80 rows of 64 features (uneven).
Client updates run as mapped Prefect tasks (clflow.federated.prefect_engine's client task) on the
thread pool or on a local Dask cluster through prefect-dask; then the server merges.
"Merge" is the time from all updates in hand to merged prototypes (target: 100
clients < 5 s). Peak memory of the merge is measured with tracemalloc.

`--flower` runs the same clients as SuperNodes of a loopback Flower deployment (one SuperLink,
clflow's PrototypeStrategy and ClientApp), `--rounds` rounds in which every client sends
its update: round time (server sends to all replies merged), payload bytes each client sends,
and the resident memory of the SuperLink with the ServerApp it starts. `--engines flower
flower-sim` adds Flower's Simulation Engine (virtual clients on Ray, one process tree: its whole
resident memory); a client count the deployment engine refuses on this machine is a row saying
so. Each run's merged sums and counts are checked against the central ones (exact counts, sums
to 1e-9).
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

import clflow.federated.prefect_engine as fed
from clflow.federated import Encoder, PrototypeServer  # noqa: E402

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
    parser.add_argument(
        "--encoders", action="store_true", help="accuracy with each encoder instead of timings"
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--flower", action="store_true", help="Flower round time, bytes, memory")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of each --flower run")
    parser.add_argument(
        "--engines", nargs="+", choices=["flower", "flower-sim"],
        help="Flower engines to run --clients on (deployment, Simulation Engine)",
    )  # fmt: skip
    args = parser.parse_args()
    if args.flower or args.engines:
        flower_table(args.clients, args.rounds, tuple(args.engines or ["flower"]))
        return
    if args.encoders:
        encoder_table(args.seeds)
        return
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


def encoder_table(seeds: list[int]) -> None:
    """Accuracy of the merged prototypes (10 clients, one class per client and round) with each
    encoder, on all classes and on the novel ones (after the 2 base experiences), against each
    client alone and joint training (an MLP classifier on all rows); mean over seeds."""
    from sklearn.neural_network import MLPClassifier

    from clflow.config import StreamConfig
    from clflow.federated.encoder import train_encoder
    from clflow.federated.simulate import accuracy_on_seen, central_server, local_accuracy
    from clflow.federated.simulate import partition as split
    from clflow.streams import build_stream

    kinds = ["raw", "random", "trained classifier", "trained protonet"]
    print(
        "\n| stream | encoder | merged, all classes | merged, novel classes | client alone "
        "| joint |"
    )
    print("|---|---|---|---|---|---|")
    for source, name in (("digits", "Split-Digits"), ("mnist1d", "Split-MNIST-1D")):
        found: dict[str, list] = {k: [] for k in kinds}
        alone, joint = [], []
        for seed in seeds:
            stream = build_stream(StreamConfig(source=source, experiences=5, seed=seed))
            tr, te = stream.train, stream.test
            base = tr.experience < 2
            novel = np.unique(te.y[te.experience >= 2])
            rounds = split(stream, 10, 1, seed)
            rows = np.concatenate([r for rd in rounds for r in rd.values()])
            every = np.unique(tr.y)
            for kind in kinds:
                if kind.startswith("trained"):
                    arrays = train_encoder(tr.X[base], tr.y[base], kind.split()[1], seed=seed)
                    enc = Encoder("trained", stream.n_features, weights=arrays, weights_id="b")
                else:
                    enc = Encoder(kind, stream.n_features, seed=seed)
                server = central_server(stream, rows, enc, enc.hash, "cosine")  # = the merge
                found[kind].append(
                    (accuracy_on_seen(server, stream, enc, every),
                     accuracy_on_seen(server, stream, enc, novel))
                )  # fmt: skip
                if kind == "raw":
                    clients = sorted({c for rd in rounds for c in rd})
                    held = [np.concatenate([rd[c] for rd in rounds if c in rd]) for c in clients]
                    alone.append(
                        np.mean([local_accuracy(stream, h, enc, enc.hash, "cosine", every)
                                 for h in held])
                    )  # fmt: skip
            mu, sd = tr.X.mean(0), tr.X.std(0) + 1e-6
            clf = MLPClassifier((256, 256), max_iter=200, random_state=seed)
            joint.append(clf.fit((tr.X - mu) / sd, tr.y).score((te.X - mu) / sd, te.y))
            print(f"  {name} seed {seed}: done", file=sys.stderr)
        for kind in kinds:
            acc = np.asarray(found[kind])
            print(
                f"| {name} | {kind} | {acc[:, 0].mean():.3f} ± {acc[:, 0].std():.3f} | "
                f"{acc[:, 1].mean():.3f} ± {acc[:, 1].std():.3f} | {np.mean(alone):.3f} | "
                f"{np.mean(joint):.3f} |"
            )


def flower_table(clients: list[int], n_rounds: int, engines: tuple[str, ...] = ("flower",)):
    """Each client count on each Flower engine, a fresh run each; deployment server memory per
    1,000 clients is extrapolated from the growth between the smallest and the largest count."""
    import tempfile

    from clflow.errors import ClflowError
    from clflow.federated.faults import client_name
    from clflow.federated.flower.engine import check_clients, run_job
    from clflow.federated.flower.job import Job, read_result

    rows = []
    for engine in engines:
        for n in clients:
            if engine == "flower":
                try:
                    check_clients(n)
                except ClflowError as refused:
                    rows.append((engine, n, None, 0.0, 0, str(refused).split(";")[0]))
                    continue
            Xs, ys = client_data(n)
            rounds = [{client_name(i): (Xs[i], ys[i]) for i in range(n)} for _ in range(n_rounds)]
            job = Job(n_rounds, N_CLASSES, DIM, "raw", "", 0, "cosine", nodes=n, timeout=1800)
            with tempfile.TemporaryDirectory() as tmp:
                try:
                    run = run_job(Path(tmp), job, rounds, engine=engine)
                except Exception:
                    for f in sorted((Path(tmp) / "logs").glob("s[eiu]*.log"))[:3]:  # first logs
                        print(f"== {f.name}\n{f.read_text()[-3000:]}", file=sys.stderr)
                    raise
                sums, counts, report = read_result(Path(tmp))
            assert all(r["accepted"] == n for r in report), [r["rejected"] for r in report]
            X, y = np.concatenate(Xs).astype(np.float64), np.concatenate(ys)
            central = np.stack([np.bincount(y, X[:, d], N_CLASSES) for d in range(DIM)], 1)
            exact = np.array_equal(counts[-1], n_rounds * np.bincount(y, minlength=N_CLASSES))
            exact &= bool(np.abs(sums[-1] - n_rounds * central).max() <= 1e-9)
            sent = [b for r in report for b in r["bytes"].values()]
            each = ", ".join(f"{r['seconds']:.1f}" for r in report)
            rows.append((engine, n, each, float(np.mean(sent)), run.server_peak_rss,
                         "yes" if exact else "**no**"))  # fmt: skip
            print(f"  {engine}: {n} clients done", file=sys.stderr)
    print(
        "\n| engine | clients | round time, s (each round) | payload bytes per client and round "
        "| peak memory, MiB | merged = central |"
    )
    print("|---|---|---|---|---|---|")
    for engine, n, each, sent, rss, exact in rows:
        if each is None:
            print(f"| {engine} | {n} | refused: {exact} | | | |")
        else:
            print(f"| {engine} | {n} | {each} | {sent:.0f} | {rss / 2**20:.0f} | {exact} |")
    ran = [r for r in rows if r[0] == "flower" and r[2] is not None]
    if len(ran) > 1:
        (_, n0, *_, r0, _), (_, n1, *_, r1, _) = ran[0], ran[-1]
        growth = (r1 - r0) / (n1 - n0) * 1000 / 2**20
        print(f"\nflower (deployment) server memory growth: {growth:.0f} MiB per 1,000 clients "
              f"(from {n0} to {n1})")  # fmt: skip


if __name__ == "__main__":
    main()
