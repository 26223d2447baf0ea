"""The stream contract (DESIGN.md): read, validate and write a stream directory."""

from __future__ import annotations

import io
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from clflow.errors import StreamError
from clflow.streams.normalize import Normalizer
from clflow.util.io import atomic_path, write_parquet

REQUIRED = {"x", "y", "experience"}


@dataclass(frozen=True)
class Split:
    """One split of a stream as numpy arrays (rows in file order)."""

    X: np.ndarray  # (n, d) float32
    y: np.ndarray  # (n,) int64
    experience: np.ndarray  # (n,) int32
    task: np.ndarray  # (n,) int32
    text: np.ndarray | None = None  # (n,) str objects: the documents X embeds (text streams)

    def __len__(self) -> int:
        return len(self.y)

    def select(self, mask: np.ndarray) -> Split:
        text = self.text[mask] if self.text is not None else None
        return Split(self.X[mask], self.y[mask], self.experience[mask], self.task[mask], text)


@dataclass(frozen=True)
class Stream:
    train: Split
    test: Split
    classes: list[str]
    shape: tuple[int, ...] | None = field(default=None)  # image shape (C, H, W) when known
    normalizer: Normalizer | None = field(default=None)  # input scaling every model applies first

    @property
    def n_experiences(self) -> int:
        return int(self.train.experience.max()) + 1

    @property
    def n_features(self) -> int:
        return int(self.train.X.shape[1])

    @property
    def is_text(self) -> bool:
        """Rows are embedded documents (a `text` stream): the text is kept beside X."""
        return self.train.text is not None

    def describe(self) -> dict[str, int]:
        """Row counts and shapes worth logging."""
        return {
            "n_train": len(self.train),
            "n_test": len(self.test),
            "n_features": self.n_features,
            "n_classes": len(self.classes),
            "n_experiences": self.n_experiences,
            "n_tasks": int(len(np.unique(self.train.task))),
        }


def default_class_names(n: int) -> list[str]:
    return [f"class {i}" for i in range(n)]


def read_features(df: pl.DataFrame, path: Path) -> np.ndarray:
    """The `x` column as a validated float32 matrix (fixed length, finite)."""
    dtype = df.schema["x"]
    if not isinstance(dtype, (pl.List, pl.Array)) or not dtype.inner.is_numeric():
        raise StreamError(f"expected a list of float32, got {dtype}", file=path, field="x")
    lengths = df["x"].list.len() if isinstance(dtype, pl.List) else None
    if lengths is not None:
        if lengths.null_count():
            raise StreamError("missing feature vectors (null)", file=path, field="x")
        lo, hi = int(lengths.min()), int(lengths.max())
        if lo != hi:
            raise StreamError(
                f"ragged feature length: rows have {lo} to {hi} values", file=path, field="x"
            )
        arr = df["x"].list.to_array(lo)
    else:
        arr = df["x"]
    X = np.array(
        arr.to_numpy(), dtype=np.float32
    )  # a writable copy (polars hands out read-only views)
    if X.ndim != 2:
        raise StreamError("feature vectors must be one-dimensional", file=path, field="x")
    bad = ~np.isfinite(X)
    if bad.any():
        row = int(np.argwhere(bad)[0][0])
        raise StreamError(f"NaN or inf in features (first at row {row})", file=path, field="x")
    return X


def check_duplicates(df: pl.DataFrame, path: Path, column: str = "x") -> None:
    """Identical (x, y) rows (or (text, y)) are a data error (a file appended twice, a bad
    join): name the first."""
    dup = (
        ~df.select(pl.struct(column, "y").is_first_distinct()).to_series().to_numpy()
    )  # repeats of an earlier row
    if dup.any():
        raise StreamError(
            f"{int(dup.sum())} duplicate rows (first at row {int(np.argmax(dup))}); "
            "drop them first",
            file=path,
            field=column,
        )


def check_labels(y: np.ndarray, n_classes: int, path: Path) -> None:
    """Every label indexes classes.json; name the first that does not."""
    if y.min() < 0 or y.max() >= n_classes:
        row = int(np.argmax((y < 0) | (y >= n_classes)))
        raise StreamError(
            f"row {row}: label {int(y[row])} outside 0..{n_classes - 1} (classes.json)",
            file=path,
            field="y",
        )


def int_column(df: pl.DataFrame, name: str, path: Path) -> np.ndarray:
    dtype = df.schema[name]
    if not dtype.is_integer():
        raise StreamError(f"expected an integer column, got {dtype}", file=path, field=name)
    col = df[name]
    if col.null_count():
        raise StreamError(f"{col.null_count()} missing values", file=path, field=name)
    return col.to_numpy()


def read_frame(
    path: Path,
    required: set[str],
    empty: str = "no rows: the stream is empty",
    data: bytes | None = None,
) -> pl.DataFrame:
    """A parquet file with the `required` columns and at least one row, or a one-line
    StreamError. `data`: the file's bytes, already read (`path` then only names it)."""
    if data is None and not path.exists():
        raise StreamError("file not found", file=path)
    try:
        df = pl.read_parquet(io.BytesIO(data) if data is not None else path)
    except Exception as exc:  # polars raises several types for a corrupt file
        raise StreamError(
            f"not a readable parquet file ({type(exc).__name__})", file=path
        ) from None
    missing = required - set(df.columns)
    if missing:
        raise StreamError(
            f"missing column (has {sorted(df.columns)})", file=path, field=sorted(missing)[0]
        )
    if df.height == 0:
        raise StreamError(empty, file=path)
    return df


def read_split(path: Path, n_classes: int | None) -> Split:
    """Read and validate one parquet split."""
    df = read_frame(path, REQUIRED)
    X = read_features(df, path)
    y = int_column(df, "y", path).astype(np.int64)
    exp = int_column(df, "experience", path).astype(np.int32)
    task = int_column(df, "task", path).astype(np.int32) if "task" in df.columns else exp.copy()
    if n_classes is not None:
        check_labels(y, n_classes, path)
    check_experiences(exp, path)
    text = None
    if "text" in df.columns:  # a prepared text stream keeps its documents beside the features
        text = np.asarray(df["text"].cast(pl.String).fill_null("").to_list(), dtype=object)
    return Split(X, y, exp, task, text)


def check_experiences(exp: np.ndarray, path: Path) -> None:
    """Experience indices start at 0 and leave no gap."""
    if exp.min() < 0:
        raise StreamError("negative experience index", file=path, field="experience")
    present = np.unique(exp)
    gaps = sorted(set(range(int(exp.max()) + 1)) - set(present.tolist()))
    if gaps:
        raise StreamError(f"experience {gaps[0]} has no rows", file=path, field="experience")


def read_class_names(path: Path) -> list[str]:
    """classes.json: a non-empty list of class names, indexed by label."""
    try:
        classes = json.loads(path.read_text())
    except FileNotFoundError:
        raise StreamError("file not found", file=path) from None
    except json.JSONDecodeError:
        raise StreamError("not valid JSON", file=path) from None
    if not isinstance(classes, list) or not classes or not all(isinstance(c, str) for c in classes):
        raise StreamError("must be a non-empty list of class names", file=path)
    return classes


def read_splits(
    directory: Path, read: Callable[[Path, int | None], Split]
) -> tuple[Split, Split, list[str] | None]:
    """(train, test, class names or None) of a stream directory, each split read by `read`
    (path, number of classes) against classes.json when there is one."""
    if not directory.is_dir():
        raise StreamError("stream directory not found", file=directory)
    classes_path = directory / "classes.json"
    classes = read_class_names(classes_path) if classes_path.exists() else None
    n_classes = len(classes) if classes else None
    return (
        read(directory / "train.parquet", n_classes),
        read(directory / "test.parquet", n_classes),
        classes,
    )


def checked_classes(
    directory: Path, train: Split, test: Split, classes: list[str] | None
) -> list[str]:
    """Every test experience has training rows; the class names (defaults where none were
    given)."""
    if int(test.experience.max()) > int(train.experience.max()):
        raise StreamError(
            "test rows of an experience with no training rows",
            file=directory / "test.parquet",
            field="experience",
        )
    if classes is None:
        classes = default_class_names(int(max(train.y.max(), test.y.max())) + 1)
    return classes


def load_stream(directory: str | Path) -> Stream:
    """Load a stream directory, checking every clause of the contract."""
    directory = Path(directory)
    train, test, classes = read_splits(directory, read_split)
    if train.X.shape[1] != test.X.shape[1]:
        raise StreamError(
            f"feature length {test.X.shape[1]} differs from train's {train.X.shape[1]}",
            file=directory / "test.parquet",
            field="x",
        )
    classes = checked_classes(directory, train, test, classes)
    meta = read_meta(directory / "meta.json")
    shape = tuple(meta.get("shape") or ())
    if shape and math.prod(shape) != train.X.shape[1]:
        raise StreamError(
            f"{list(shape)} holds {math.prod(shape)} values, the rows {train.X.shape[1]}",
            file=directory / "meta.json",
            field="shape",
        )
    try:
        normalizer = Normalizer.from_dict(meta.get("normalize"))
    except (KeyError, TypeError, ValueError):
        raise StreamError(
            "not a valid normalizer (kind, mean, std)",
            file=directory / "meta.json",
            field="normalize",
        ) from None
    if normalizer is not None and normalizer.mean.shape != (train.X.shape[1],):
        raise StreamError(
            f"normalizer has {normalizer.mean.size} features, the stream {train.X.shape[1]}",
            file=directory / "meta.json",
            field="normalize",
        )
    return Stream(train, test, classes, shape or None, normalizer)


def read_meta(path: Path) -> dict:
    """meta.json (shape, normalizer, duplicate counts); {} when absent."""
    if not path.exists():
        return {}
    try:
        meta = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise StreamError("not valid JSON", file=path) from None
    if not isinstance(meta, dict):
        raise StreamError("must be a JSON object", file=path)
    return meta


def split_frame(split: Split) -> pl.DataFrame:
    columns = {
        "x": pl.Series("x", split.X.astype(np.float32)).cast(pl.List(pl.Float32)),
        "y": pl.Series("y", split.y, dtype=pl.Int64),
        "experience": pl.Series("experience", split.experience, dtype=pl.Int32),
        "task": pl.Series("task", split.task, dtype=pl.Int32),
    }
    if split.text is not None:
        columns["text"] = pl.Series("text", split.text.tolist(), dtype=pl.String)
    return pl.DataFrame(columns)


def write_stream(stream: Stream, directory: str | Path, extra_meta: dict | None = None) -> None:
    """Write a stream directory; each file lands atomically. `extra_meta` joins meta.json."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    write_parquet(directory / "train.parquet", split_frame(stream.train))
    write_parquet(directory / "test.parquet", split_frame(stream.test))
    norm = stream.normalizer.to_dict() if stream.normalizer is not None else {"kind": "none"}
    meta = {"shape": list(stream.shape or []), "normalize": norm, **(extra_meta or {})}
    for name, obj in (("classes.json", stream.classes), ("meta.json", meta)):
        with atomic_path(directory / name) as tmp:
            tmp.write_text(json.dumps(obj, indent=1) + "\n")
