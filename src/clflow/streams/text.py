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

TEXT = "text"  # the column (and a served request's key) that holds the documents
TEXT_REQUIRED = {TEXT, "y", "experience"}
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
    values = col.to_list()
    found = first_bad_text(values, max_chars)
    if found:
        raise StreamError(f"row {found[0]}: {found[1]}", file=path, field="text")
    return np.asarray(values, dtype=object)


def text_problem(value: object, max_chars: int) -> str:
    """Why `value` is not a document ("" when it is): not a string, empty, or too long."""
    if value is None or (isinstance(value, float) and value != value):  # null, or pandas' NaN
        return "missing text (null)"
    if not isinstance(value, str):
        shown = "true" if value is True else "false" if value is False else repr(value)[:40]
        return f"{shown} is not a string"
    if not value.strip():
        return "empty text"
    if len(value) > max_chars:
        return f"{len(value):,} characters, over stream.max_text_chars ({max_chars:,})"
    return ""


def first_bad_text(values: Sequence[object], max_chars: int) -> tuple[int, str] | None:
    """(row, why) of the first value that is not a document, or None when all are."""
    for row, value in enumerate(values):
        problem = text_problem(value, max_chars)
        if problem:
            return row, problem
    return None


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
