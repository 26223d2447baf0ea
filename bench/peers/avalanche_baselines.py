"""The same baselines in Avalanche 0.6.0, on a clflow stream directory (a named-peer check).

Avalanche is never a clflow dependency (it imports torchvision, which does not load
beside clflow's CPU torch). Run it from a venv of its own:

    python3.11 -m venv .venv-avalanche
    .venv-avalanche/bin/pip install torch==2.5.1 torchvision==0.20.1 avalanche-lib==0.6.0 \
        pandas pyarrow
    .venv/bin/python bench/peers/export_streams.py /tmp/streams          # clflow writes the streams
    .venv-avalanche/bin/python bench/peers/avalanche_baselines.py /tmp/streams/split_digits

Same settings as clflow's `baselines` stage: the stream's normalizer applied to the
features (clflow applies it inside the model), MLP 256-256, Adam 1e-3, batch 32 (+32
from memory), 5 epochs per experience; `Naive`, `Naive` + `ReplayPlugin(mem_size)`
(experience-balanced storage), `ER_ACE`, `DER` (beta 0: DER; alpha 0.3 as clflow's
`baselines.der_alpha`), `DER` (DER++: alpha 0.1, beta 0.5), `GDumb` and `Cumulative`.
Prints avg accuracy, mean ± std.

    .venv-avalanche/bin/python bench/peers/avalanche_baselines.py STREAM_DIR \
        --methods er_ace der derpp gdumb --memory 200
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

BOUNDED = ("replay", "er_ace", "der", "derpp", "gdumb")
METHODS = ("finetune", *BOUNDED, "joint")


def read_split(path: Path, norm: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    df = pd.read_parquet(path)
    X = np.stack(df["x"].to_numpy()).astype(np.float32)
    if norm.get("kind") == "standard":
        X = (X - np.asarray(norm["mean"], np.float32)) / np.asarray(norm["std"], np.float32)
    return X, df["y"].to_numpy().astype(np.int64), df["experience"].to_numpy()


def run(stream: Path, method: str, memory: int, seed: int, epochs: int) -> float:
    from avalanche.benchmarks.scenarios.dataset_scenario import benchmark_from_datasets
    from avalanche.benchmarks.utils.classification_dataset import (
        _make_taskaware_tensor_classification_dataset,
    )
    from avalanche.training import DER, ER_ACE, Cumulative, GDumb, Naive
    from avalanche.training.plugins import ReplayPlugin

    norm = json.loads((stream / "meta.json").read_text()).get("normalize", {})
    (Xtr, ytr, etr), (Xte, yte, ete) = (
        read_split(stream / f"{s}.parquet", norm) for s in ("train", "test")
    )
    T = int(etr.max()) + 1
    ds = lambda X, y: _make_taskaware_tensor_classification_dataset(  # noqa: E731
        torch.tensor(X), torch.tensor(y), task_labels=0
    )
    bench = benchmark_from_datasets(
        train=[ds(Xtr[etr == e], ytr[etr == e]) for e in range(T)],
        test=[ds(Xte[ete == e], yte[ete == e]) for e in range(T)],
    )
    torch.manual_seed(seed)
    np.random.seed(seed)
    n_classes = int(max(ytr.max(), yte.max())) + 1
    model = nn.Sequential(
        nn.Linear(Xtr.shape[1], 256),
        nn.ReLU(),
        nn.Linear(256, 256),
        nn.ReLU(),
        nn.Linear(256, n_classes),
    )
    kw = dict(
        optimizer=torch.optim.Adam(model.parameters(), lr=1e-3),
        criterion=nn.CrossEntropyLoss(),
        train_mb_size=32,
        train_epochs=epochs,
        eval_mb_size=1024,
        device="cpu",
        evaluator=None,
    )
    if method == "joint":
        strategy = Cumulative(model=model, **kw)
    elif method == "er_ace":
        strategy = ER_ACE(model=model, mem_size=memory, batch_size_mem=32, **kw)
    elif method in ("der", "derpp"):
        weights = dict(alpha=0.3, beta=0.0) if method == "der" else dict(alpha=0.1, beta=0.5)
        strategy = DER(model=model, mem_size=memory, batch_size_mem=32, **weights, **kw)
    elif method == "gdumb":
        strategy = GDumb(model=model, mem_size=memory, **kw)
    else:
        plugins = [ReplayPlugin(mem_size=memory)] if method == "replay" else []
        strategy = Naive(model=model, plugins=plugins, **kw)
    for exp in bench.train_stream:
        strategy.train(exp)
    model.eval()
    with torch.no_grad():
        # GDumb trains a fresh copy of the model at each experience: evaluate the strategy's
        pred = strategy.model.eval()(torch.tensor(Xte)).argmax(1).numpy()
    return float(np.mean([(pred[ete == e] == yte[ete == e]).mean() for e in range(T)]))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("stream", type=Path, help="a clflow stream directory")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--memory", type=int, nargs="+", default=[200, 500])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    args = parser.parse_args()
    columns = [("finetune", 0)] + [(b, m) for m in args.memory for b in BOUNDED] + [("joint", 0)]
    columns = [(method, memory) for method, memory in columns if method in args.methods]
    cells = []
    for method, memory in columns:
        accs = [run(args.stream, method, memory, seed, args.epochs) for seed in args.seeds]
        cells.append(f"{np.mean(accs):.3f} ± {np.std(accs):.3f}")
    print("| stream | " + " | ".join(f"{m} ({k})" if k else m for m, k in columns) + " |")
    print(f"| {args.stream.name} (Avalanche 0.6.0) | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
