"""Write the benchmark streams of bench/baselines.py as clflow stream directories, for peers to
read.

python bench/peers/export_streams.py OUT_DIR
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from baselines import STREAMS  # noqa: E402

from clflow.streams import build_stream, write_stream  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("out", type=Path)
    args = parser.parse_args()
    for name, cfg in STREAMS.items():
        write_stream(build_stream(cfg), args.out / name.lower().replace("-", "_"))
        print(args.out / name.lower().replace("-", "_"))


if __name__ == "__main__":
    main()
