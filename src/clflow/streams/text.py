"""Text streams (`stream.source: text`): documents in a `text` column, embedded into `x`.

This module owns the `text` column: what a valid document is (a non-empty UTF-8 string of
at most `stream.max_text_chars` characters) and how a directory of documents becomes a
stream. Embedding is handed in (`embed`: texts -> rows), so streams never load a model.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import polars as pl

from clflow.errors import StreamError
from clflow.streams.schema import (
    Split,
    Stream,
    check_experiences,
    check_labels,
    checked_classes,
    int_column,
    read_frame,
    read_splits,
)

TEXT_REQUIRED = {"text", "y", "experience"}
MAX_TEXT_CHARS = 2000  # the default limit: MiniLM reads 256 tokens, about 1,000 characters
Embed = Callable[[Sequence[str]], np.ndarray]


def read_texts(df: pl.DataFrame, path: Path, max_chars: int) -> np.ndarray:
    """The `text` column as str objects: every row a non-empty UTF-8 string of at most
    `max_chars` characters, or one line naming the first row that is not."""
    col = df["text"]
    if col.dtype == pl.Binary:  # bytes: decode strictly, naming the first row that is not UTF-8
        values = []
        for row, raw in enumerate(col.to_list()):
            try:
                values.append(None if raw is None else raw.decode("utf-8"))
            except UnicodeDecodeError as err:
                raise StreamError(
                    f"row {row}: not UTF-8 (byte {raw[err.start]:#04x} at {err.start})",
                    file=path,
                    field="text",
                ) from None
        col = pl.Series("text", values, dtype=pl.String)
    elif col.dtype != pl.String:
        raise StreamError(f"expected UTF-8 strings, got {col.dtype}", file=path, field="text")
    checks = (
        (col.is_null(), "missing text (null)"),
        (col.str.strip_chars().str.len_chars() == 0, "empty text"),
    )
    for bad, what in checks:
        mask = bad.fill_null(False).to_numpy()
        if mask.any():
            raise StreamError(f"row {int(np.argmax(mask))}: {what}", file=path, field="text")
    lengths = col.str.len_chars().to_numpy()
    if lengths.max() > max_chars:
        row = int(np.argmax(lengths > max_chars))
        raise StreamError(
            f"row {row}: {int(lengths[row]):,} characters, over stream.max_text_chars "
            f"({max_chars:,})",
            file=path,
            field="text",
        )
    return np.asarray(col.to_list(), dtype=object)


def read_text_split(path: Path, n_classes: int | None, max_chars: int) -> Split:
    """One split of a text directory, validated; X is empty (0 features) until embedded."""
    df = read_frame(path, TEXT_REQUIRED)
    text = read_texts(df, path, max_chars)
    y = int_column(df, "y", path).astype(np.int64)
    if n_classes is not None:
        check_labels(y, n_classes, path)
    exp = int_column(df, "experience", path).astype(np.int32)
    check_experiences(exp, path)
    task = int_column(df, "task", path).astype(np.int32) if "task" in df.columns else exp.copy()
    return Split(np.empty((len(y), 0), np.float32), y, exp, task, text)


def load_text_stream(
    directory: str | Path, embed: Embed, max_chars: int = MAX_TEXT_CHARS
) -> Stream:
    """A text directory (train.parquet / test.parquet with `text`, `y`, `experience`, optional
    `task`; classes.json) as a stream whose X are the embeddings of its texts."""
    directory = Path(directory)
    read = lambda path, n_classes: read_text_split(path, n_classes, max_chars)  # noqa: E731
    train, test, classes = read_splits(directory, read)
    classes = checked_classes(directory, train, test, classes)
    X = embed([*train.text, *test.text])  # one pass, one progress bar, one cache look-up
    train = Split(X[: len(train)], train.y, train.experience, train.task, train.text)
    test = Split(X[len(train) :], test.y, test.experience, test.task, test.text)
    return Stream(train, test, classes)
