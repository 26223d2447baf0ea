"""Accepted experiences: validate an incoming file against the stream, and own the files of
`data/experiences/` (this module owns their format).

An incoming file is a parquet file with the stream contract's `x` and `y` columns,
an optional `task` (a recurring task reuses its id) and an optional `split`
("train" / "test"; without it a seeded share of `stream.test_size` rows is held out).
Accepted files are normalised into `data/experiences/` (a dependency of `prepare`),
so `prepare` rebuilds the same base stream and appends them in order: the stream
is DVC-versioned with every accepted experience and reproducible from them.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import polars as pl

from clflow.errors import StreamError
from clflow.streams.schema import (
    Split,
    Stream,
    check_duplicates,
    check_labels,
    int_column,
    read_features,
    read_frame,
)
from clflow.streams.text import Embed, read_texts
from clflow.util.io import write_json, write_parquet

SPLITS = ("train", "test")
MAX_SCALE = 1000.0  # features beyond this many times the stream's largest |x| are refused
SOURCES_FILE = (
    "sources.json"  # accepted file -> its source name and SHA-256 (duplicates are rejected)
)
# An incoming file is judged by its parquet footer before a row is decoded: a few kB of
# compressed zeros can decode to gigabytes (measured: 226 kB -> 24 million rows, 5.8 GB).
MAX_ROWS = 1_000_000  # rows in one experience (Fashion-MNIST, the largest stream, has 70,000)
MAX_DECODED_BYTES = 2 << 30  # uncompressed size of one experience's columns
MAGIC = b"PAR1"  # a parquet file starts and ends with it: a file without both is incomplete


class IncompleteFile(StreamError):
    """A parquet file without its footer: still being written, or cut short."""


@dataclass(frozen=True)
class Incoming:
    """An incoming file's bytes, read once from one descriptor, and their SHA-256."""

    path: Path
    data: bytes
    sha256: str


def read_incoming(path: str | Path, max_bytes: int) -> Incoming:
    """The file's bytes (one open, one read: what is hashed is what is parsed), checked to be a
    complete parquet file within MAX_ROWS and MAX_DECODED_BYTES, from its metadata alone."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    with open(path, "rb") as fh:
        data = fh.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise StreamError(f"over the {max_bytes} byte limit for one experience", file=path)
    if len(data) < 12 or data[:4] != MAGIC or data[-4:] != MAGIC:
        raise IncompleteFile("not a complete parquet file (no footer yet)", file=path)
    try:
        meta = pq.read_metadata(pa.BufferReader(data))
    except (pa.ArrowException, OSError, ValueError) as err:
        why = f"unreadable parquet footer ({type(err).__name__})"
        raise IncompleteFile(why, file=path) from None
    decoded = sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups))
    if meta.num_rows > MAX_ROWS:
        raise StreamError(
            f"{meta.num_rows:,} rows, over the {MAX_ROWS:,}-row limit for one experience: "
            "split it into several files",
            file=path,
        )
    if decoded > MAX_DECODED_BYTES:
        raise StreamError(
            f"{decoded:,} bytes once decompressed, over the {MAX_DECODED_BYTES:,} byte limit "
            "for one experience: split it into several files",
            file=path,
        )
    return Incoming(path, data, hashlib.sha256(data).hexdigest())


@dataclass(frozen=True)
class Experience:
    """One validated new experience: train and test rows, and its task id (None = a new task)."""

    train_X: np.ndarray
    train_y: np.ndarray
    test_X: np.ndarray
    test_y: np.ndarray
    task: int | None
    train_text: np.ndarray | None = None  # the documents, for a text stream
    test_text: np.ndarray | None = None


def _split_mask(df: pl.DataFrame, path: Path, test_size: float, seed: int) -> np.ndarray:
    """True for test rows: the file's `split` column, else a seeded random share."""
    if "split" in df.columns:
        split = df["split"].cast(pl.String)
        bad = split.filter(~split.is_in(SPLITS) | split.is_null())
        if len(bad):
            raise StreamError(
                f"value {bad[0]!r} is not one of {list(SPLITS)}", file=path, field="split"
            )
        return (split == "test").to_numpy()
    n = df.height
    n_test = int(round(n * test_size))
    mask = np.zeros(n, dtype=bool)
    mask[np.random.default_rng(seed).permutation(n)[:n_test]] = True
    return mask


def read_experience(
    path: str | Path | Incoming,
    n_features: int,
    n_classes: int,
    *,
    test_size: float = 0.3,
    seed: int = 0,
    n_tasks: int | None = None,
    max_abs: float | None = None,
    text: TextInput | None = None,
) -> Experience:
    """Read and validate one incoming experience file against the stream it joins.

    `n_tasks`: a `task` column must name one of the stream's tasks (a recurring one);
    `max_abs`: the stream's largest |feature|, which new features may exceed MAX_SCALE-fold;
    `text`: the stream is a text stream: the file carries `text` in place of `x`, embedded here.
    """
    data = path.data if isinstance(path, Incoming) else None
    path = path.path if isinstance(path, Incoming) else Path(path)
    column = "x" if text is None else "text"
    df = read_frame(path, {column, "y"}, empty="no rows: the experience is empty", data=data)
    docs = None
    if text is None:
        X = read_features(df, path)
    else:
        docs = read_texts(df, path, text.max_chars)
        X, max_abs = text.embed(docs), None  # embeddings have the stream's own scale
    if X.shape[1] != n_features:
        raise StreamError(
            f"feature length {X.shape[1]}, the stream has {n_features}", file=path, field="x"
        )
    if max_abs is not None and np.abs(X).max() > MAX_SCALE * max(max_abs, 1.0):
        row = int(np.abs(X).max(axis=1).argmax())
        raise StreamError(
            f"value {float(np.abs(X).max()):.3g} at row {row} is over {MAX_SCALE:g} times the "
            f"stream's largest |x| ({max_abs:.3g}): wrong units?",
            file=path,
            field="x",
        )
    y = int_column(df, "y", path).astype(np.int64)
    check_labels(y, n_classes, path)
    task = None
    if "task" in df.columns:
        tasks = np.unique(int_column(df, "task", path))
        if len(tasks) != 1 or tasks[0] < 0:
            raise StreamError(
                f"one experience has one task id >= 0, got {tasks.tolist()[:5]}",
                file=path,
                field="task",
            )
        task = int(tasks[0])
        if n_tasks is not None and task >= n_tasks:
            raise StreamError(
                f"task {task} is not one of the stream's tasks (0..{n_tasks - 1}); leave the "
                "column out for a new task",
                file=path,
                field="task",
            )
    check_duplicates(df, path, column)
    test = _split_mask(df, path, test_size, seed)
    if test.all() or not test.any():
        raise StreamError("needs both train and test rows", file=path, field="split")
    texts = (None, None) if docs is None else (docs[~test], docs[test])
    return Experience(X[~test], y[~test], X[test], y[test], task, *texts)


@dataclass(frozen=True)
class TextInput:
    """How a text stream takes new documents: the longest accepted and the embedding."""

    max_chars: int
    embed: Embed


def file_digest(path: Path) -> str:
    with open(path, "rb") as fh:  # in chunks: never the whole file in memory
        return hashlib.file_digest(fh, "sha256").hexdigest()


def write_experience(exp: Experience, directory: str | Path, index: int, name: str) -> Path:
    """Write an accepted experience as `<index>-<name>.parquet`, atomically; return its path."""
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", name)[:60]
    out = Path(directory) / f"{index:04d}-{stem}.parquet"
    n_tr, n_te = len(exp.train_y), len(exp.test_y)
    if exp.train_text is not None:  # a text stream keeps the documents: prepare embeds them
        features = pl.Series("text", [*exp.train_text, *exp.test_text], dtype=pl.String)
    else:
        features = pl.Series("x", np.concatenate([exp.train_X, exp.test_X])).cast(
            pl.List(pl.Float32)
        )
    df = pl.DataFrame(
        {
            features.name: features,
            "y": pl.Series("y", np.concatenate([exp.train_y, exp.test_y]), dtype=pl.Int64),
            "split": ["train"] * n_tr + ["test"] * n_te,
            "task": pl.Series(
                "task", [-1 if exp.task is None else exp.task] * (n_tr + n_te), dtype=pl.Int32
            ),
        }
    )
    write_parquet(out, df)
    return out


def accepted_files(directory: str | Path) -> list[Path]:
    """Accepted experiences in arrival order (their index prefix)."""
    directory = Path(directory)
    return sorted(directory.glob("[0-9][0-9][0-9][0-9]-*.parquet")) if directory.is_dir() else []


def _append(
    split: Split, X: np.ndarray, y: np.ndarray, experience: int, task: int, text: np.ndarray | None
) -> Split:
    n = len(y)
    if (split.text is None) != (text is None):
        raise StreamError("a text stream takes documents (`text`), a feature stream `x`")
    return Split(
        np.concatenate([split.X, X]),
        np.concatenate([split.y, y]),
        np.concatenate([split.experience, np.full(n, experience, np.int32)]),
        np.concatenate([split.task, np.full(n, task, np.int32)]),
        None if text is None else np.concatenate([split.text, text]),
    )


def append_experiences(stream: Stream, directory: str | Path, embed: Embed | None = None) -> Stream:
    """The stream with every accepted experience in `directory` appended, in order; a text
    stream's documents are embedded with `embed`."""
    for path in accepted_files(directory):
        df = pl.read_parquet(path)
        test_rows = (df["split"] == "test").to_numpy()
        docs = None
        if "text" in df.columns:
            if embed is None:
                raise StreamError("documents, but the stream is not a text stream", file=path)
            docs = np.asarray(df["text"].to_list(), dtype=object)
            X = embed(docs)
        else:
            X = read_features(df, path)
        y = df["y"].to_numpy().astype(np.int64)
        task = int(df["task"][0])
        texts = (None, None) if docs is None else (docs[~test_rows], docs[test_rows])
        exp = Experience(
            X[~test_rows],
            y[~test_rows],
            X[test_rows],
            y[test_rows],
            None if task < 0 else task,
            *texts,
        )
        stream = with_experience(stream, exp)
    return stream


def with_experience(stream: Stream, exp: Experience) -> Stream:
    """`stream` with `exp` appended as its next experience; a new task gets the next unused id."""
    task = n_task_ids(stream) if exp.task is None else exp.task
    e = int(stream.train.experience.max()) + 1
    return replace(
        stream,
        train=_append(stream.train, exp.train_X, exp.train_y, e, task, exp.train_text),
        test=_append(stream.test, exp.test_X, exp.test_y, e, task, exp.test_text),
    )


def n_task_ids(stream: Stream) -> int:
    """One more than the largest task id in the stream."""
    return int(max(stream.train.task.max(), stream.test.task.max())) + 1


def accepted_sources(experiences: Path) -> dict[str, dict]:
    """{accepted file name: {source, sha256}} as the intake recorded them."""
    path = experiences / SOURCES_FILE
    return json.loads(path.read_text()) if path.exists() else {}


def record_source(experiences: Path, accepted: str, source: str, digest: str) -> None:
    write_json(
        experiences / SOURCES_FILE,
        {**accepted_sources(experiences), accepted: {"source": source, "sha256": digest}},
    )
