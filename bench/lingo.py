"""Compare LingoCL heads (one-hot, frozen random targets, language targets); prints a markdown
table per stream with average accuracy, forgetting, FWT, `zero_shot` and, on text, the names
alone.

    make bench-data && python bench/lingo.py [--seeds 0 1 2] [--streams digits fashion fortunes]

Streams: Split-Digits, Split-Fashion-MNIST (Debian's dataset-fashion-mnist), Split-Fortunes
(`data/fortunes`, built by `make bench-data`) and Split-Fortunes in another class order
(`fortunes-reordered`, never tuned on: `lingo.learnt_weight` was chosen on Split-Fortunes).
Same code as the `lingo` stage (clflow.lingo.compare); equal learners, memory and seeds.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from clflow.config import LingoConfig, StreamConfig, TrainConfig
from clflow.lingo.compare import compare, head_metrics, names_alone
from clflow.lingo.targets import encode_names, load_encoder
from clflow.sentence import EmbeddingCache
from clflow.streams import build_stream
from clflow.streams.fortunes import write_fortunes

FORTUNES = Path("data/fortunes")
# name: (title, stream config, class-name template)
STREAMS = {
    "digits": ("Split-Digits", {"source": "digits"}, "the handwritten digit {name}"),
    "fashion": ("Split-Fashion-MNIST", {"source": "fashion_mnist"}, "{name}"),
    "fortunes": ("Split-Fortunes", {"source": "text", "path": str(FORTUNES)}, "{name}"),
    "fortunes-reordered": ("Split-Fortunes, class order 1", {"source": "text"}, "{name}"),
}


def stream_config(name: str, scratch: Path) -> StreamConfig:
    kwargs = dict(STREAMS[name][1])
    if name == "fortunes-reordered":  # the same documents, classes in another (seeded) order
        write_fortunes(scratch / "fortunes-1", order_seed=1)
        kwargs["path"] = str(scratch / "fortunes-1")
    elif name == "fortunes" and not FORTUNES.is_dir():
        raise SystemExit(f"{FORTUNES} is missing: run `make bench-data` first")
    return StreamConfig(**kwargs)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--memory", type=int, default=200)
    parser.add_argument("--streams", nargs="+", choices=list(STREAMS), default=list(STREAMS))
    args = parser.parse_args()
    train, encoder, cache = TrainConfig(seeds=args.seeds), load_encoder(), EmbeddingCache()
    print(
        "\n| stream | method | head | avg accuracy | forgetting | FWT | zero_shot | names alone |"
        "\n|---|---|---|---|---|---|---|---|"
    )
    with tempfile.TemporaryDirectory() as scratch:
        for name in args.streams:
            title, _, template = STREAMS[name]
            stream = build_stream(stream_config(name, Path(scratch)), cache.embed)
            cfg = LingoConfig(template=template)
            language = encode_names(stream.classes, template, encoder)
            names = names_alone(stream, language)
            alone = f"{names['names_alone']:.3f}" if names else "–"
            results = compare(stream, language, train, cfg, args.memory)
            for method, heads in head_metrics(results).items():
                for head, m in heads.items():
                    cells = [
                        f"{m[k]:.3f} ± {m[k + '_std']:.3f}"
                        for k in ("avg_accuracy", "forgetting", "fwt", "zero_shot")
                    ]
                    print(f"| {title} | {method} | {head} | {' | '.join(cells)} | {alone} |")


if __name__ == "__main__":
    main()
