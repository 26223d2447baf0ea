"""Compare LingoCL heads on Split-Digits and Permuted-Digits; prints a markdown table.

    python bench/lingo.py [--seeds 0 1 2]

Same code as the `lingo` stage (clflow.lingo.compare), run on both streams.
"""

from __future__ import annotations

import argparse

from clflow.config import LingoConfig, StreamConfig, TrainConfig
from clflow.lingo.compare import compare
from clflow.lingo.targets import encode_names, load_encoder
from clflow.metrics import mean_std
from clflow.streams import build_stream


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--memory", type=int, default=200)
    args = parser.parse_args()
    cfg, train = LingoConfig(), TrainConfig(seeds=args.seeds)
    encoder = load_encoder()
    print(
        "\n| stream | method | head | avg accuracy | forgetting | BWT |\n|---|---|---|---|---|---|"
    )
    for name, source in (("Split-Digits", "digits"), ("Permuted-Digits", "permuted_digits")):
        stream = build_stream(StreamConfig(source=source))
        language = encode_names(stream.classes, cfg.template, encoder)
        for method, heads in compare(stream, language, train, cfg, args.memory).items():
            for head, runs in heads.items():
                m = mean_std([r.metrics() for r in runs])
                print(
                    f"| {name} | {method} | {head} | "
                    f"{m['avg_accuracy']:.3f} ± {m['avg_accuracy_std']:.3f} | "
                    f"{m['forgetting']:.3f} ± {m['forgetting_std']:.3f} | "
                    f"{m['bwt']:.3f} ± {m['bwt_std']:.3f} |"
                )


if __name__ == "__main__":
    main()
