"""Split-Fortunes: a class-incremental text stream from Debian's `fortunes` package.

Each fortune file is a category (computers, food, law, ...); its entries, separated by
lines holding `%`, are the documents. The classes come in a fixed order, two per
experience, and each class's rows are split into train and test with a seed:

    python -m clflow.streams.fortunes --out data/fortunes     # what `make bench-data` runs

The result is a `stream.source: text` directory (train.parquet, test.parquet, classes.json).
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import numpy as np
import polars as pl

from clflow.errors import StreamError, cli_errors
from clflow.util.io import atomic_dir

FORTUNES_DIR = Path("/usr/share/games/fortunes")
# the fixed class order: topical categories of at least 50 entries, in the order the
# stream presents them (experience e holds classes 2e and 2e + 1)
CATEGORIES = (
    "computers",
    "food",
    "law",
    "love",
    "medicine",
    "pets",
    "politics",
    "science",
    "sports",
    "education",
)
MAX_CHARS = 1000  # longer entries (poems, transcripts) are left out: MiniLM reads ~256 tokens


def read_entries(path: Path) -> list[str]:
    """The entries of one fortune file: text between `%` lines, stripped, non-empty."""
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:  # a few old files are Latin-1
        text = raw.decode("latin-1")
    entries = (e.strip() for e in re.split(r"^%\s*$", text, flags=re.MULTILINE))
    return [e for e in entries if e]


def fortunes_frames(
    source: Path,
    categories: tuple[str, ...] = CATEGORIES,
    per_experience: int = 2,
    test_size: float = 0.3,
    seed: int = 0,
    max_chars: int = MAX_CHARS,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(train, test) frames with `text`, `y`, `experience`: class i (`categories[i]`) in
    experience i // per_experience. An entry found in two categories is left out of both."""
    texts: dict[str, list[str]] = {}
    for name in categories:
        path = source / name
        if not path.is_file():
            raise StreamError(
                "no such fortune file (apt-get install fortunes)", file=path, field="categories"
            )
        texts[name] = list(dict.fromkeys(e for e in read_entries(path) if len(e) <= max_chars))
    counts: dict[str, int] = {}
    for entries in texts.values():
        for e in entries:
            counts[e] = counts.get(e, 0) + 1
    rng = np.random.default_rng(seed)
    parts: dict[str, list[dict]] = {"train": [], "test": []}
    for label, name in enumerate(categories):
        entries = [e for e in texts[name] if counts[e] == 1]
        order = rng.permutation(len(entries))
        n_test = int(round(len(entries) * test_size))
        for rank, i in enumerate(order):
            split = "test" if rank < n_test else "train"
            row = {"text": entries[i], "y": label, "experience": label // per_experience}
            parts[split].append(row)
    schema = {"text": pl.String, "y": pl.Int64, "experience": pl.Int32}
    frames = [pl.DataFrame(parts[s], schema=schema) for s in ("train", "test")]
    return frames[0], frames[1]


def class_order(order_seed: int = 0) -> tuple[str, ...]:
    """The categories in the fixed order (0), or in another order drawn with `order_seed`."""
    if order_seed == 0:
        return CATEGORIES
    perm = np.random.default_rng(order_seed).permutation(len(CATEGORIES))
    return tuple(CATEGORIES[i] for i in perm)


def write_fortunes(
    out: Path, source: Path = FORTUNES_DIR, seed: int = 0, order_seed: int = 0
) -> dict[str, int]:
    """Write the Split-Fortunes directory `out` (atomically, as a whole); return its sizes."""
    categories = class_order(order_seed)
    train, test = fortunes_frames(source, categories, seed=seed)
    with atomic_dir(out) as tmp:
        train.write_parquet(tmp / "train.parquet")
        test.write_parquet(tmp / "test.parquet")
        (tmp / "classes.json").write_text(json.dumps(list(categories), indent=1) + "\n")
    return {"n_train": train.height, "n_test": test.height, "n_classes": len(categories)}


@cli_errors
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m clflow.streams.fortunes",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--out", type=Path, default=Path("data/fortunes"), help="stream directory")
    parser.add_argument("--source", type=Path, default=FORTUNES_DIR, help="the fortune files")
    parser.add_argument("--seed", type=int, default=0, help="the train/test split")
    parser.add_argument(
        "--order-seed", type=int, default=0, help="0: the fixed class order; else another, drawn"
    )
    args = parser.parse_args(argv)
    sizes = write_fortunes(args.out, args.source, args.seed, args.order_seed)
    print(f"wrote {args.out}: {sizes}")


if __name__ == "__main__":
    main()
