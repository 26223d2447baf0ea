"""Benchmark TAME against its targets (issues 3, 13 and 28); prints markdown tables.

    python bench/tame.py [--seeds 0 1 2] [--epochs 5] [--streams NAME ...]
    python bench/tame.py --peers-only [--peer-streams NAME ...]

The peers table (first): TAME with every default against finetune, experience and online
replay, ER-ACE, DER, DER++, GDumb and joint, each memory-bounded peer storing as many rows as
TAME's buffers hold, on six streams (PEER_STREAMS; Split-Fashion-MNIST and Split-Fortunes, a
text stream, need `make bench-data`), with TAME's routing accuracy and its accuracy under oracle
routing beside it.

Everything is measured in this run: TAME on eight streams (Split-MNIST-1D three times: with
the default MLP; with MLP experts and a Conv1d selector; with a Conv1d backbone and the
continual router: SETTINGS); experience replay
(standard, told the boundaries) and online replay (a reservoir, boundary-free
like TAME), each with TAME's total buffer memory; the size of TAME after online
pruning against the same run unpruned; the routers compared; the routing ceiling (the
selector network trained on all rows with their true task); throughput with and without
detection; and an incremental update against a full retrain.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from clflow.baselines.methods import learner_for_method
from clflow.config import StreamConfig, TameConfig, TrainConfig
from clflow.evaluation import run_methods, run_stream
from clflow.sentence import EmbeddingCache
from clflow.streams import Stream, build_stream, iter_batches
from clflow.tame.evaluate import tame_scores
from clflow.tame.training import make_tame, train_seed
from clflow.util.parallel import run_parallel

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
    "Split-MNIST-1D, CNN selector (class-incr.)": StreamConfig(source="mnist1d", experiences=5),
    "Split-MNIST-1D, CNN (class-incr.)": StreamConfig(source="mnist1d", experiences=5),
}
# Streams run with other settings than the defaults: (train updates, tame updates). TAME and the
# replays share the train settings (same backbone, same epochs).
SETTINGS = {
    # the default MLP experts; only the selector is a Conv1d (its ceiling: the routing table)
    "Split-MNIST-1D, CNN selector (class-incr.)": ({}, {"selector_backbone": "cnn"}),
    "Split-MNIST-1D, CNN (class-incr.)": (
        {"backbone": "cnn"},
        {
            "router": "continual",
            "selector_targets": "class",
            "selector_steps": 2,
            "selector_sparsity": 0.0,
        },
    ),
}
REPLAYS = ("replay", "replay_online")
PEER_STREAMS = {
    "Split-Digits": StreamConfig(source="digits", experiences=5),
    "Split-MNIST-1D": StreamConfig(source="mnist1d", experiences=5),
    "Permuted-MNIST-1D": StreamConfig(source="permuted_mnist1d", experiences=5),
    "Split-Fashion-MNIST": StreamConfig(source="fashion_mnist", experiences=5),
    "Recurring A B A C B (permuted digits)": StreamConfig(
        source="permuted_digits", experiences=3, tasks=[0, 1, 0, 2, 1]
    ),
    # documents embedded by the shipped encoder (cached in .clflow/embeddings/)
    "Split-Fortunes": StreamConfig(source="text", path="data/fortunes"),
}
PEERS = ("finetune", "replay", "replay_online", "er_ace", "der", "derpp", "gdumb", "joint")
BOUNDED = ("replay", "replay_online", "er_ace", "der", "derpp", "gdumb")
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
SIZE = ["expert_nonzero_parameters", "dense_expert_parameters", "selector_nonzero_parameters"]
DENSE = {"prune_sparsity": 0.0, "selector_sparsity": 0.0}
ROUTERS = {  # the selector before issue 13, and what each change adds
    "buffers only, expert targets": {"router": "buffer", "selector_targets": "expert"},
    "continual, expert targets": {"router": "continual", "selector_targets": "expert"},
    "continual, (expert, class) targets": {"router": "continual", "selector_targets": "class"},
}
ROUTED_STREAMS = ("Split-Digits (class-incr.)", "Split-MNIST-1D (class-incr.)")
CEILING_STREAMS = (*ROUTED_STREAMS, "Split-MNIST-1D, CNN (class-incr.)", "Split-Fashion-MNIST")
CEILING_EPOCHS = 20  # passes over all training rows (the selector's 100 are over 500 buffered)


def settings(name: str, train: TrainConfig, tame: TameConfig) -> tuple[TrainConfig, TameConfig]:
    """The train and tame settings a stream runs with."""
    t, m = SETTINGS.get(name, ({}, {}))
    return train.model_copy(update=t), tame.model_copy(update=m)


def fmt(vals: list[float]) -> str:
    return f"{np.mean(vals):.3f} ± {np.std(vals):.3f}"


def tame_run(stream: Stream, train: TrainConfig, tame: TameConfig, seed: int):
    """(trained TAME, its accuracy, detection, routing and size scores)."""
    learner = make_tame(stream, train, tame, seed)
    result = run_stream(
        learner, stream, batch_size=train.batch_size, epochs=train.epochs, seed=seed
    )
    scores = tame_scores(learner, stream, result.batch_experience, tame.match_tolerance)
    return learner, {**result.metrics(), **scores}


def routers(train: TrainConfig, tame: TameConfig, seeds: list[int], names: list[str]):
    """avg accuracy and selector accuracy of each router, per stream."""
    out = {}
    for name in [n for n in names if n in ROUTED_STREAMS]:
        stream = build_stream(STREAMS[name].model_copy(update={"seed": 0}))
        for label, update in ROUTERS.items():
            runs = [tame_run(stream, train, tame.model_copy(update=update), s)[1] for s in seeds]
            out[name, label] = [[r[k] for r in runs] for k in ("avg_accuracy", "selector_accuracy")]
    return out


def ceiling(
    train: TrainConfig,
    tame: TameConfig,
    seeds: list[int],
    names: list[str],
    networks: list[str] | None = None,
):
    """Test task-id accuracy of TAME's selector network trained offline on *all* training rows
    with their true task: what any router with that network could reach (no memory bound, no
    detection error). With `selector_backbone: auto`, each network auto chooses from.
    Returns {(stream, network): accuracies per seed}."""
    out = {}
    for name in [n for n in names if n in CEILING_STREAMS]:
        t, m = settings(name, train, tame)
        cfg = m.model_copy(update={"selector_targets": "expert"})  # one output per task
        stream = build_stream({**STREAMS, **PEER_STREAMS}[name].model_copy(update={"seed": 0}))
        tasks = np.unique(stream.train.task)
        labels = np.searchsorted(tasks, stream.train.task)
        tamed = make_tame(stream, t, cfg, seeds[0]).initialize(stream.n_features)
        nets = [tamed.router_.selector_.backbone]
        if cfg.selector_backbone == "auto":
            nets = [n for n in tamed.router_.candidates() if n in (networks or [n])]
        for net in nets:
            accs = []
            for seed in seeds:
                one = cfg.model_copy(update={"selector_backbone": net})
                selector = (
                    make_tame(stream, t, one, seed).initialize(stream.n_features).router_.selector_
                )
                selector.epochs = CEILING_EPOCHS
                selector.resize([], len(tasks))
                selector.fit(stream.train.X, labels, stream.train.y)
                routed = tasks[selector.route(stream.test.X)]
                accs.append(float(np.mean(routed == stream.test.task)))
            out[name, net] = accs
    return out


def quality(
    train: TrainConfig,
    tame: TameConfig,
    seeds: list[int],
    names: list[str],
) -> dict[str, dict[str, list[float]]]:
    table: dict[str, dict[str, list[float]]] = {}
    base_train, base_tame = train, tame
    for name in names:
        train, tame = settings(name, base_train, base_tame)
        stream = build_stream(STREAMS[name].model_copy(update={"seed": 0}))
        rows = table.setdefault(name, {k: [] for k in KEYS + SIZE + [*REPLAYS, "memory", "dense"]})
        for seed in seeds:
            learner, scores = tame_run(stream, train, tame, seed)
            for k in KEYS + SIZE:
                rows[k].append(scores[k])
            dense = tame_run(stream, train, tame.model_copy(update=DENSE), seed)[1]
            rows["dense"].append(dense["avg_accuracy"])
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


def peers(
    train: TrainConfig, tame: TameConfig, seeds: list[int], names: list[str]
) -> dict[str, dict[str, list[float]]]:
    """{stream: {column: per-seed values}}: TAME (defaults) and every peer, the bounded ones at
    the rows TAME's buffers hold in the same seed, then again at the bytes TAME keeps (rows,
    selector weights, class statistics: `memory_report`). All runs in parallel when CPUs are
    free."""
    table = {}
    train = train.model_copy(update={"seeds": seeds})
    for name in names:
        cfg = PEER_STREAMS[name]
        stream = build_stream(cfg, EmbeddingCache().embed if cfg.source == "text" else None)
        jobs = [lambda seed=seed: tame_run(stream, train, tame, seed) for seed in seeds]
        tamed = run_parallel(jobs, f"{name} TAME", unit="seeds")
        kept = {s: t.memory_report() for s, (t, _) in zip(seeds, tamed)}
        rows = {s: kept[s]["memory_rows"] for s in seeds}
        runs = run_methods(peer_makers(stream, train, PEERS, rows), stream, train, desc=name,
                           cumulative=["joint"])  # fmt: skip
        row = {m: [r.metrics()["avg_accuracy"] for _, r in runs[m]] for m in PEERS}
        # equal bytes: as many of its own rows as fit in the bytes TAME keeps, seed by seed
        # (a peer's row costs its features, label and priority, and DER's logits)
        fit = {
            m: {s: rows_in(kept[s]["memory_bytes"], peer) for s, (peer, _) in zip(seeds, runs[m])}
            for m in BOUNDED
        }
        runs = run_methods(
            {m: peer_makers(stream, train, [m], fit[m])[m] for m in BOUNDED}, stream, train,
            desc=f"{name} equal bytes",
        )  # fmt: skip
        row.update({f"{m} bytes": [r.metrics()["avg_accuracy"] for _, r in runs[m]]
                    for m in BOUNDED})  # fmt: skip
        row["rows at equal bytes"] = [np.mean(list(fit[m].values())) for m in BOUNDED]
        for k in ("avg_accuracy", "selector_accuracy", "oracle_avg_accuracy"):
            row[f"tame {k}"] = [scores[k] for _, scores in tamed]
        row["memory"] = list(rows.values())
        row["bytes"] = [kept[s]["memory_bytes"] for s in seeds]
        row["router bytes"] = [kept[s]["router_bytes"] for s in seeds]
        row["statistics route"] = [float(t.router_.routed_by_ == "statistics") for t, _ in tamed]
        row["cnn selector"] = [float(t.router_.selector_.backbone == "cnn") for t, _ in tamed]
        table[name] = row
        print(f"  {name}: done", file=sys.stderr)
    return table


def rows_in(nbytes: int, peer) -> int:
    """How many of `peer`'s rows (as it stored them, logits included) fit in `nbytes`."""
    held = peer.memory_report()
    return nbytes * held["memory_rows"] // max(held["memory_bytes"], 1)


def peer_makers(stream: Stream, train: TrainConfig, methods, memory: dict[int, int]) -> dict:
    """{method: seed -> learner} with `memory[seed]` rows for the bounded ones."""
    return {
        m: lambda seed, m=m: learner_for_method(m, stream, train, seed, memory[seed])
        for m in methods
    }


def peers_table(train: TrainConfig, tame: TameConfig, seeds: list[int], names: list[str]) -> None:
    """The headline table: TAME with its defaults against every peer at equal memory, in rows
    and in bytes."""
    table = peers(train, tame, seeds, names)
    print(f"\n### TAME against its peers, all defaults ({len(seeds)} seeds, mean ± std)\n")
    print(
        "Memory-bounded peers store as many rows as TAME's buffers (column *rows*); "
        "**bold**: the best memory-bounded method.\n"
    )
    print(
        "| stream | rows | TAME | " + " | ".join(PEERS) + " | TAME routing | TAME, oracle "
        "routing | routed by statistics | CNN selector chosen |"
    )
    print("|---|---|---|" + "---|" * len(PEERS) + "---|---|---|---|")
    for name, r in table.items():
        cell = best_cells(r, BOUNDED)
        print(
            f"| {name} | {np.mean(r['memory']):.0f} | {cell('tame avg_accuracy')} | "
            + " | ".join(cell(m) for m in PEERS)
            + f" | {fmt(r['tame selector_accuracy'])} | {fmt(r['tame oracle_avg_accuracy'])} "
            f"| {np.mean(r['statistics route']):.0%} of seeds "
            f"| {np.mean(r['cnn selector']):.0%} of seeds |"
        )
    print(
        "\n#### At equal bytes\n\nTAME keeps its buffers' rows, its selector's weights "
        "(float32, counted dense) and its class statistics (*TAME bytes*; *router*: the last "
        "two); each bounded peer stores as many of its own rows as fit in those bytes (*rows*, "
        "mean over the peers).\n"
    )
    print("| stream | TAME bytes | router | rows | TAME | " + " | ".join(BOUNDED) + " |")
    print("|---|---|---|---|---|" + "---|" * len(BOUNDED))
    for name, r in table.items():
        cell = best_cells(r, [f"{m} bytes" for m in BOUNDED])
        print(
            f"| {name} | {kb(r['bytes'])} | {kb(r['router bytes'])} "
            f"| {np.mean(r['rows at equal bytes']):,.0f} | {cell('tame avg_accuracy')} | "
            + " | ".join(cell(f"{m} bytes") for m in BOUNDED)
            + " |"
        )


def kb(values: list[float]) -> str:
    return f"{np.mean(values) / 1e3:,.0f} kB"


def best_cells(r: dict[str, list[float]], bounded):
    """A cell formatter that bolds the best of TAME and the bounded columns."""
    best = max(["tame avg_accuracy", *bounded], key=lambda k: np.mean(r[k]))
    return lambda k: f"**{fmt(r[k])}**" if k == best else fmt(r[k])


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


REPEATS = 5  # timed runs per seed and variant; the fastest counts
VARIANTS = {  # throughput columns: TameConfig updates
    "without detection": {"detect": False},
    "with detection": {"detect": True},
    "with detection, no pruning": {"detect": True, "prune_sparsity": 0.0},
    "with detection, continual router": {"detect": True, "router": "continual"},
}


def throughput(
    train: TrainConfig, tame: TameConfig, seeds: list[int]
) -> list[tuple[str, dict[str, float]]]:
    """Batches/s of each variant, per stream: the best of `REPEATS` runs per seed (a run is only
    ever slowed by other work on the machine, and this VM's speed varies by 1.5x within a
    minute), then the median over seeds."""
    out = []
    for name in ("Stationary (digits, 5 chunks)", "Split-Digits (class-incr.)"):
        stream = build_stream(STREAMS[name])
        rates: dict[str, list[float]] = {v: [] for v in VARIANTS}
        train_time(
            make_tame(stream, train, tame, seeds[0]), stream, train, seeds[0]
        )  # warm-up, discarded
        for seed in seeds:
            best: dict[str, float] = {}
            for _ in range(REPEATS):
                for variant, update in VARIANTS.items():  # interleaved: drift hits all alike
                    cfg = tame.model_copy(update=update)
                    t, n = train_time(make_tame(stream, train, cfg, seed), stream, train, seed)
                    best[variant] = max(best.get(variant, 0.0), n / t)
            for variant, rate in best.items():
                rates[variant].append(rate)
        out.append((name, {v: float(np.median(r)) for v, r in rates.items()}))
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
    parser.add_argument(
        "--timing-only", action="store_true", help="only throughput and incremental timing"
    )
    parser.add_argument(
        "--ceiling-only", action="store_true", help="only the routing-ceiling table"
    )
    parser.add_argument("--peers-only", action="store_true", help="only the peers table")
    parser.add_argument(
        "--ceiling-streams",
        nargs="+",
        choices=CEILING_STREAMS,
        help="default: those of --streams and --peer-streams that have a ceiling row",
    )
    parser.add_argument(
        "--ceiling-networks",
        nargs="+",
        choices=["mlp", "cnn"],
        help="with selector_backbone auto, only these of its candidates (default: all)",
    )
    parser.add_argument(
        "--peer-streams", nargs="+", default=list(PEER_STREAMS), choices=list(PEER_STREAMS)
    )
    args = parser.parse_args()
    train, tame = TrainConfig(epochs=args.epochs, seeds=args.seeds), TameConfig()
    if args.ceiling_only:
        return ceiling_table(train, tame, args)
    if not args.timing_only:
        peers_table(train, tame, args.seeds, args.peer_streams)
    if args.peers_only:
        return None
    if not args.timing_only:
        tables(train, tame, args)
        ceiling_table(train, tame, args)
    if not args.quality_only:
        timing(train, tame, args.seeds)


def tables(train: TrainConfig, tame: TameConfig, args: argparse.Namespace) -> None:
    """Quality, pruning and router tables."""

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

    print(f"\n### Online pruning ({len(args.seeds)} seeds, mean)\n")
    print(
        "| stream | experts | non-zero in experts | one dense expert | ratio "
        "| selector non-zero | avg acc pruned | avg acc unpruned |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name, r in table.items():
        nz, one = np.mean(r["expert_nonzero_parameters"]), np.mean(r["dense_expert_parameters"])
        print(
            f"| {name} | {np.mean(r['n_experts']):.1f} | {nz:,.0f} | {one:,.0f} | "
            f"{nz / one:.2f}× | {np.mean(r['selector_nonzero_parameters']):,.0f} | "
            f"{fmt(r['avg_accuracy'])} | {fmt(r['dense'])} |"
        )

    compared = routers(train, tame, args.seeds, args.streams)
    if compared:
        print(f"\n### Routers ({len(args.seeds)} seeds, mean)\n")
        print("| stream | selector | avg acc | selector acc |")
        print("|---|---|---|---|")
    for (name, label), (acc, sel) in compared.items():
        print(f"| {name} | {label} | {fmt(acc)} | {fmt(sel)} |")


def ceiling_table(train: TrainConfig, tame: TameConfig, args: argparse.Namespace) -> None:
    """What the selector network can reach at all on each class-incremental stream."""
    names = args.ceiling_streams or [*args.streams, *args.peer_streams]
    reached = ceiling(train, tame, args.seeds, list(dict.fromkeys(names)), args.ceiling_networks)
    if not reached:
        return
    print(f"\n### Routing ceiling ({len(args.seeds)} seeds, mean)\n")
    print(
        f"TAME's selector network trained offline on all training rows with their true task "
        f"({CEILING_EPOCHS} epochs), test task-id accuracy:\n"
    )
    print("| stream | selector network | task-id accuracy, all rows, true tasks |")
    print("|---|---|---|")
    for (name, net), accs in reached.items():
        print(f"| {name} | {net} | {fmt(accs)} |")


def timing(train: TrainConfig, tame: TameConfig, seeds: list[int]) -> None:
    """Throughput with and without detection; incremental update against a full retrain."""
    print("\n### Training throughput (batches/s in partial_fit: best of 5 runs, median of seeds)\n")
    others = [v for v in VARIANTS if v != "without detection"]
    print("| stream | without detection | " + " | ".join(others) + " |")
    print("|---|---|" + "---|" * len(others))
    for name, r in throughput(train, tame, seeds):
        off = r["without detection"]
        cells = [f"{r[v]:.0f} ({r[v] / off:.2f}×)" for v in others]
        print(f"| {name} | {off:.0f} | " + " | ".join(cells) + " |")

    full, inc = incremental(train, tame, seeds[0])
    print("\n### Incremental update: one appended experience (Split-Digits 4 → 5), median of 3\n")
    print("| full retrain (5 exp.) | continue from checkpoint (1 exp.) | ratio |")
    print("|---|---|---|")
    print(f"| {full:.2f} s | {inc:.2f} s | {inc / full:.2f}× |")


if __name__ == "__main__":
    main()
