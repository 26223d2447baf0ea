"""Baselines on published benchmarks: finetune, the memory-bounded peers, and joint.

    python bench/baselines.py [--seeds 0 1 2] [--epochs 5] [--memory 200 500] [--streams NAME ...]
                              [--methods finetune replay replay_online er_ace der derpp gdumb joint]

Each method in its standard form: Avalanche 0.6.0's Naive, Replay (experience-balanced
storage), GDumb and Cumulative (joint); the boundary-free reservoir `replay_online`; ER-ACE,
DER and DER++ as their papers and Mammoth run them (a reservoir updated every batch), at
`params.yaml`'s weights. MLP 256-256, Adam 1e-3, batch 32, default `stream.normalize`
(standard, fitted on the first experience). Split-Fashion-MNIST needs Debian's
dataset-fashion-mnist (`make bench-data`). Prints a markdown table of avg accuracy and
forgetting (mean ± std over seeds).
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from clflow.baselines.methods import learner_for_method
from clflow.config import BaselinesConfig, StreamConfig, TrainConfig
from clflow.evaluation import run_methods
from clflow.streams import build_stream

STREAMS = {
    "Split-Digits": StreamConfig(source="digits", experiences=5),
    "Split-MNIST-1D": StreamConfig(source="mnist1d", experiences=5),
    "Permuted-MNIST-1D": StreamConfig(source="permuted_mnist1d", experiences=5),
    "Split-Fashion-MNIST": StreamConfig(source="fashion_mnist", experiences=5),
}
BOUNDED = ("replay", "replay_online", "er_ace", "der", "derpp", "gdumb")  # at each memory
METHODS = ("finetune", *BOUNDED, "joint")


def fmt(vals: list[float]) -> str:
    return f"{np.mean(vals):.3f} ± {np.std(vals):.3f}"


def measure(
    name: str, train: TrainConfig, memories: list[int], methods: list[str], options: BaselinesConfig
) -> dict[str, dict[str, list[float]]]:
    """{column: {metric: per-seed values}} for one stream; every run in parallel when CPUs are
    free."""
    stream = build_stream(STREAMS[name])
    columns = [("finetune", 0)] + [(m, mem) for mem in memories for m in BOUNDED] + [("joint", 0)]
    columns = [(m, mem) for m, mem in columns if m in methods]
    makers = {
        f"{m} ({mem})" if mem else m: lambda seed, m=m, mem=mem: learner_for_method(
            m, stream, train, seed, mem, options
        )
        for m, mem in columns
    }
    runs = run_methods(makers, stream, train, cumulative=["joint"], desc=name)
    out = {}
    for label, seeds in runs.items():
        out[label] = {k: [r.metrics()[k] for _, r in seeds] for k in ("avg_accuracy", "forgetting")}
        print(f"  {name} {label}: {fmt(out[label]['avg_accuracy'])}", file=sys.stderr)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument(
        "--memory",
        type=int,
        nargs="+",
        default=[200, 500],
        help="stored rows (each bounded method)",
    )
    parser.add_argument("--streams", nargs="+", default=list(STREAMS), choices=list(STREAMS))
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument(
        "--storage",
        choices=["reservoir", "experience"],
        default="reservoir",
        help="baselines.peer_storage for er_ace, der and derpp (experience: Avalanche's form)",
    )
    args = parser.parse_args(argv)
    train = TrainConfig(epochs=args.epochs, seeds=args.seeds)
    options = BaselinesConfig(peer_storage=args.storage)
    results = {
        name: measure(name, train, args.memory, args.methods, options) for name in args.streams
    }
    columns = list(next(iter(results.values())))
    print(
        f"\n### Baselines: avg accuracy (forgetting), {len(args.seeds)} seeds, mean ± std, "
        f"peer storage {args.storage}\n"
    )
    print("| stream | " + " | ".join(columns) + " |")
    print("|---|" + "---|" * len(columns))
    for name, res in results.items():
        cells = [
            f"{fmt(res[c]['avg_accuracy'])} ({np.mean(res[c]['forgetting']):.3f})" for c in columns
        ]
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
