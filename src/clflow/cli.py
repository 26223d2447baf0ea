"""`clflow` command line: inspect what the pipeline built.

    clflow retrieve --bank models/retrieval/bank --query data/stream/test.parquet -k 5
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import polars as pl

from clflow.errors import StreamError, cli_errors


def load_queries(path: Path, limit: int) -> pl.DataFrame:
    """Query rows from a parquet file with an `x` column (stream contract); y, if present, is shown."""
    from clflow.streams.schema import read_features

    if not path.exists():
        raise StreamError("file not found", file=path)
    try:
        df = pl.read_parquet(path)
    except Exception as exc:
        raise StreamError(f"not a readable parquet file ({type(exc).__name__})", file=path) from None
    if "x" not in df.columns:
        raise StreamError(f"missing column (has {sorted(df.columns)})", file=path, field="x")
    if df.height == 0:
        raise StreamError("no rows to query", file=path)
    df = df.head(limit)
    return df.with_columns(pl.Series("x", list(read_features(df, path))))


def retrieve(args: argparse.Namespace) -> None:
    import numpy as np

    from clflow.retrieval import DemoBank

    bank = DemoBank.load(args.bank)
    queries = load_queries(Path(args.query), args.limit)
    X = np.stack(queries["x"].to_list())
    scores, ids, labels = bank.search(X, args.k)
    meta = bank.meta
    extra = [c for c in meta.columns if c not in ("id", "label")]
    score_name = "similarity" if bank.config.metric == "ip" else "sq_distance"
    rows = []
    for q in range(len(X)):
        for rank in range(args.k):
            if ids[q, rank] < 0:
                continue
            row = {"query": q, "rank": rank + 1, "id": int(ids[q, rank]), "label": int(labels[q, rank]),
                   score_name: round(float(scores[q, rank]), 4)}
            if "y" in queries.columns:
                row["query_label"] = int(queries["y"][q])
            row.update({c: meta[c][int(ids[q, rank])] for c in extra})
            rows.append(row)
    table = pl.DataFrame(rows)
    with pl.Config(tbl_rows=len(rows), tbl_hide_dataframe_shape=True, tbl_hide_column_data_types=True):
        print(table)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="clflow", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("retrieve", help="print the nearest demonstrations of query rows")
    r.add_argument("--bank", required=True, help="bank directory (index.faiss, meta.parquet, bank.json)")
    r.add_argument("--query", required=True, help="parquet file with an `x` list column (e.g. test.parquet)")
    r.add_argument("-k", type=int, default=5, help="neighbours per query (default 5)")
    r.add_argument("--limit", type=int, default=5, help="query at most this many rows (default 5)")
    r.set_defaults(func=retrieve)
    args = parser.parse_args(argv)
    cli_errors(args.func)(args)


if __name__ == "__main__":
    sys.exit(main())
