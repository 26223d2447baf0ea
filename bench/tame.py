"""Benchmark TAME against its targets (issue 3); prints markdown tables.

    python bench/tame.py [--seeds 0 1 2] [--epochs 5] [--streams NAME ...]

Everything is measured in this run: TAME on six streams; experience replay
(standard, told the boundaries) and online replay (a reservoir, boundary-free
like TAME), each with TAME's total buffer memory; throughput with and without
detection; and an incremental update against a full retrain.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from clflow.config import StreamConfig, TameConfig, TrainConfig
from clflow.evaluation import run_stream
from clflow.learners import learner_for_method
from clflow.streams import Stream, build_stream, iter_batches
from clflow.tame.evaluate import tame_scores

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "stages"))
from tame import make_tame, train_seed  # noqa: E402

STREAMS = {
    "Split-Digits (class-incr.)": StreamConfig(source="digits", experiences=5),
    "Permuted-Digits (domain-incr.)": StreamConfig(source="permuted_digits", experiences=5),
    "Recurring A B A C B (permuted)": StreamConfig(
        source="permuted_digits", experiences=3, tasks=[0, 1, 0, 2, 1]
    ),
    "Stationary (digits, 5 chunks)": StreamConfig(
        source="digits", experiences=1, tasks=[0, 0, 0, 0, 0]
    ),
    "Split-MNIST-1D (class-incr.)": StreamConfig(source="mnist1d", experiences=5),
    "Permuted-MNIST-1D (domain-incr.)": StreamConfig(source="permuted_mnist1d", experiences=5),
}
REPLAYS = ("replay", "replay_online")
KEYS = [
    "avg_accuracy",
    "forgetting",
    "detection_f1",
    "detection_delay",
    "false_alarms",
    "n_experts",
    "selector_accuracy",
    "oracle_avg_accuracy",
]


def fmt(vals: list[float]) -> str:
    return f"{np.mean(vals):.3f} ± {np.std(vals):.3f}"


def quality(
    train: TrainConfig,
    tame: TameConfig,
    seeds: list[int],
    names: list[str],
) -> dict[str, dict[str, list[float]]]:
    table: dict[str, dict[str, list[float]]] = {}
    for name in names:
        stream = build_stream(STREAMS[name].model_copy(update={"seed": 0}))
        rows = table.setdefault(name, {k: [] for k in KEYS + [*REPLAYS, "memory"]})
        for seed in seeds:
            learner = make_tame(stream, train, tame, seed)
            result = run_stream(
                learner, stream, batch_size=train.batch_size, epochs=train.epochs, seed=seed
            )
            scores = {
                **result.metrics(),
                **tame_scores(learner, stream, result.batch_experience, tame.match_tolerance),
            }
            for k in KEYS:
                rows[k].append(scores[k])
            memory = sum(len(e.buffer) for e in learner.experts_.values())
            for method in REPLAYS:
                replay = learner_for_method(method, stream, train, seed, memory)
                rows[method].append(
                    run_stream(
                        replay, stream, batch_size=train.batch_size, epochs=train.epochs, seed=seed
                    ).metrics()["avg_accuracy"]
                )
            rows["memory"].append(memory)
        print(f"  {name}: done", file=sys.stderr)
    return table


def train_time(learner, stream: Stream, train: TrainConfig, seed: int) -> tuple[float, int]:
    """Seconds spent in partial_fit over the whole stream (evaluation excluded)."""
    learner.initialize(stream.n_features)
    n, t = 0, 0.0
    for e in range(stream.n_experiences):
        rows = stream.train.experience == e
        for epoch in range(train.epochs):
            for X, y in iter_batches(
                stream.train.X[rows], stream.train.y[rows], train.batch_size, seed=epoch
            ):
                t0 = time.perf_counter()
                learner.partial_fit(X, y)
                t += time.perf_counter() - t0
                n += 1
    return t, n


def throughput(
    train: TrainConfig, tame: TameConfig, seeds: list[int]
) -> list[tuple[str, float, float]]:
    out = []
    for name in ("Stationary (digits, 5 chunks)", "Split-Digits (class-incr.)"):
        stream = build_stream(STREAMS[name])
        rates: dict[bool, list[float]] = {True: [], False: []}
        train_time(
            make_tame(stream, train, tame, seeds[0]), stream, train, seeds[0]
        )  # warm-up, discarded
        for seed in seeds:
            for detect in (False, True) * 3:  # interleaved, so drift hits both alike
                t, n = train_time(
                    make_tame(stream, train, tame.model_copy(update={"detect": detect}), seed),
                    stream,
                    train,
                    seed,
                )
                rates[detect].append(n / t)
        out.append((name, float(np.median(rates[False])), float(np.median(rates[True]))))
    return out


def incremental(train: TrainConfig, tame: TameConfig, seed: int) -> tuple[float, float]:
    full_stream = build_stream(StreamConfig(source="digits", experiences=5, tasks=[0, 1, 2, 3, 4]))
    first = build_stream(StreamConfig(source="digits", experiences=5, tasks=[0, 1, 2, 3]))
    with tempfile.TemporaryDirectory() as tmp:
        full_t, inc_t = [], []
        for rep in range(3):
            ckpt = Path(tmp) / f"full{rep}.pt"
            t0 = time.perf_counter()
            train_seed(full_stream, train, tame, seed, ckpt, ckpt)
            full_t.append(time.perf_counter() - t0)
            ckpt = Path(tmp) / f"inc{rep}.pt"
            train_seed(first, train, tame, seed, ckpt, ckpt)
            t0 = time.perf_counter()
            _, _, start = train_seed(full_stream, train, tame, seed, ckpt, ckpt)
            inc_t.append(time.perf_counter() - t0)
            assert start == 4, "the update did not continue from the checkpoint"
    return float(np.median(full_t)), float(np.median(inc_t))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--streams", nargs="+", default=list(STREAMS), choices=list(STREAMS))
    parser.add_argument(
        "--quality-only", action="store_true", help="skip throughput and incremental timing"
    )
    args = parser.parse_args()
    train, tame = TrainConfig(epochs=args.epochs, seeds=args.seeds), TameConfig()

    table = quality(train, tame, args.seeds, args.streams)
    print(f"\n### TAME quality ({len(args.seeds)} seeds, mean ± std)\n")
    print(
        "| stream | avg acc | experience replay, same memory | online replay, same memory "
        "| memory | forgetting | detection F1 | delay (batches) | false alarms | experts "
        "| selector acc | oracle-routed acc |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name, r in table.items():
        print(
            f"| {name} | {fmt(r['avg_accuracy'])} | {fmt(r['replay'])} | "
            f"{fmt(r['replay_online'])} | "
            f"{np.mean(r['memory']):.0f} | " + " | ".join(fmt(r[k]) for k in KEYS[1:]) + " |"
        )
    if args.quality_only:
        return

    print("\n### Training throughput (batches/s in partial_fit, median)\n")
    print("| stream | without detection | with detection | ratio |")
    print("|---|---|---|---|")
    for name, off, on in throughput(train, tame, args.seeds):
        print(f"| {name} | {off:.0f} | {on:.0f} | {on / off:.2f}× |")

    full, inc = incremental(train, tame, args.seeds[0])
    print("\n### Incremental update: one appended experience (Split-Digits 4 → 5), median of 3\n")
    print("| full retrain (5 exp.) | continue from checkpoint (1 exp.) | ratio |")
    print("|---|---|---|")
    print(f"| {full:.2f} s | {inc:.2f} s | {inc / full:.2f}× |")


if __name__ == "__main__":
    main()
