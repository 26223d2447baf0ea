"""Benchmark DemoBank indexes against exact brute-force numpy search; prints a markdown table.

    python bench/retrieval.py [--n 1000000] [--dim 128] [--queries 1000]

Synthetic clustered vectors (Gaussian blobs around random centres). For each
index: build time, index size, queries/s and recall@10 against the exact
numpy search measured in the same run. IVF nprobe and HNSW efSearch are tuned
to recall@10 >= 0.95 on held-out tuning queries before timing.
"""

from __future__ import annotations

import argparse
import resource
import time

import faiss
import numpy as np

from clflow.retrieval import BankConfig, DemoBank, recall_at_k


def clustered(n: int, dim: int, n_centres: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_centres, dim)).astype(np.float32)
    X = centres[rng.integers(0, n_centres, n)]
    X += 0.35 * rng.standard_normal((n, dim), dtype=np.float32)
    return X


def perturbed_queries(X: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Queries near stored points (a new sample of a known kind), unit length."""
    rng = np.random.default_rng(seed)
    Q = X[rng.choice(len(X), n, replace=False)] + 0.05 * rng.standard_normal(
        (n, X.shape[1]), dtype=np.float32
    )
    return Q / np.linalg.norm(Q, axis=1, keepdims=True)


def exact_search(X: np.ndarray, Q: np.ndarray, k: int, chunk: int = 100_000) -> np.ndarray:
    """Brute-force inner-product top-k with numpy, in chunks of the base set."""
    best_s = np.full((len(Q), k), -np.inf, dtype=np.float32)
    best_i = np.zeros((len(Q), k), dtype=np.int64)
    for start in range(0, len(X), chunk):
        S = Q @ X[start : start + chunk].T
        top = np.argpartition(-S, k - 1, axis=1)[:, :k]
        cand_s = np.concatenate([best_s, np.take_along_axis(S, top, 1)], 1)
        cand_i = np.concatenate([best_i, top + start], 1)
        order = np.argsort(-cand_s, axis=1)[:, :k]
        best_s, best_i = np.take_along_axis(cand_s, order, 1), np.take_along_axis(cand_i, order, 1)
    return best_i


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--centres", type=int, default=1000)
    parser.add_argument("--k", type=int, default=10)
    args = parser.parse_args()
    k = args.k
    X = clustered(args.n, args.dim, args.centres, seed=0)
    X /= np.linalg.norm(
        X, axis=1, keepdims=True
    )  # the bank's inner-product metric works on unit vectors
    Q = perturbed_queries(X, args.queries, seed=2)
    tune_q = perturbed_queries(X, 200, seed=3)  # held out from the timed queries
    print(
        f"n={args.n} dim={args.dim} queries={args.queries} k={k} "
        f"threads={faiss.omp_get_max_threads()}"
    )

    n_exact = min(len(Q), 200)  # numpy is slow: time it on a subset, but use it for every recall
    t0 = time.perf_counter()
    ref = exact_search(X, Q[:n_exact], k)
    exact_qps = n_exact / (time.perf_counter() - t0)
    ref = np.concatenate([ref, exact_search(X, Q[n_exact:], k)]) if len(Q) > n_exact else ref

    rows = [("exact numpy (baseline)", 0.0, X.nbytes, exact_qps, 1.0, "")]
    configs = [
        ("Flat (faiss, exact)", BankConfig(index="flat")),
        ("IVF-Flat", BankConfig(index="ivf")),
        ("IVF-PQ (16 B/vector)", BankConfig(index="ivf", pq_m=16)),
        ("HNSW32", BankConfig(index="hnsw", ef_construction=40)),
    ]
    for name, cfg in configs:
        bank = DemoBank(args.dim, cfg)
        t0 = time.perf_counter()
        bank.add(X, np.zeros(len(X), dtype=np.int64))
        build = time.perf_counter() - t0
        tuned = bank.tune(tune_q, recall=0.95, k=k)
        knob = {
            "ivf": f"nlist {getattr(bank.index, 'nlist', '')}, "
            f"nprobe {getattr(bank.index, 'nprobe', '')}",
            "hnsw": f"efC 40, efSearch {bank.index.hnsw.efSearch}" if bank.kind == "hnsw" else "",
            "flat": "",
        }[bank.kind]
        bank.search(Q[:10], k)  # warm-up
        t0 = time.perf_counter()
        _, ids, _ = bank.search(Q, k)
        qps = len(Q) / (time.perf_counter() - t0)
        size = len(faiss.serialize_index(bank.index))
        # PQ: tuning sees the compressed vectors, so its recall is vs those; the codes cap true
        # recall
        what = "vs codes" if cfg.pq_m else "tuning"
        rows.append(
            (
                name,
                build,
                size,
                qps,
                recall_at_k(ids, ref),
                knob + (f" ({what} recall {tuned:.3f})" if knob else ""),
            )
        )
        del bank

    print("\n| index | build s | index MB | queries/s | × exact numpy | recall@10 | settings |")
    print("|---|---|---|---|---|---|---|")
    for name, build, size, qps, rec, knob in rows:
        print(
            f"| {name} | {build:.1f} | {size / 2**20:.0f} | {qps:,.0f} | {qps / exact_qps:.1f}× "
            f"| {rec:.3f} | {knob} |"
        )
    print(f"\npeak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB")


if __name__ == "__main__":
    main()
