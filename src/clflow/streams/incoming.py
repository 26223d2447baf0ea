"""New experiences for a running stream: validate an incoming file, accept it, append it.

An incoming file is a parquet file with the stream contract's `x` and `y` columns,
an optional `task` (a recurring task reuses its id) and an optional `split`
("train" / "test"; without it a seeded share of `stream.test_size` rows is held out).
Accepted files are normalised into `data/experiences/` (a dependency of `prepare`),
so `prepare` rebuilds the same base stream and appends them in order: the stream
is DVC-versioned with every accepted experience and reproducible from them.

Intake takes only complete regular files: a `*.parquet` entry that is a directory,
a symlink, a FIFO or over MAX_BYTES is moved aside unread, and one modified in the
last SETTLE_SECONDS is left for the next run (it may still be being written; the
safe way to deliver is to write `name.parquet.tmp` and rename it, since only
`*.parquet` names are read). A file is judged by the stream it would produce: the
project's duplicate policy (`stream.duplicates`) is applied to the stream with the
file appended, so a file that `prepare` would refuse never gets in.
"""

from __future__ import annotations

import hashlib
import json
import re
import stat
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import numpy as np
import polars as pl

from clflow.errors import StreamError
from clflow.ops.io import write_json, write_parquet
from clflow.progress import Progress
from clflow.streams.duplicates import Policy, apply_policy
from clflow.streams.schema import (
    Split,
    Stream,
    check_duplicates,
    check_labels,
    int_column,
    read_features,
    read_frame,
)

SPLITS = ("train", "test")
MAX_BYTES = 2 << 30  # an incoming file larger than 2 GiB is refused unread
SETTLE_SECONDS = 2.0  # a file modified more recently may still be being written
MAX_SCALE = 1000.0  # features beyond this many times the stream's largest |x| are refused
SOURCES_FILE = (
    "sources.json"  # accepted file -> its source name and SHA-256 (duplicates are rejected)
)


@dataclass(frozen=True)
class Experience:
    """One validated new experience: train and test rows, and its task id (None = a new task)."""

    train_X: np.ndarray
    train_y: np.ndarray
    test_X: np.ndarray
    test_y: np.ndarray
    task: int | None


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
    path: str | Path,
    n_features: int,
    n_classes: int,
    *,
    test_size: float = 0.3,
    seed: int = 0,
    n_tasks: int | None = None,
    max_abs: float | None = None,
) -> Experience:
    """Read and validate one incoming experience file against the stream it joins.

    `n_tasks`: a `task` column must name one of the stream's tasks (a recurring one);
    `max_abs`: the stream's largest |feature|, which new features may exceed MAX_SCALE-fold.
    """
    path = Path(path)
    df = read_frame(path, {"x", "y"}, empty="no rows: the experience is empty")
    X = read_features(df, path)
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
    check_duplicates(df, path)
    test = _split_mask(df, path, test_size, seed)
    if test.all() or not test.any():
        raise StreamError("needs both train and test rows", file=path, field="split")
    return Experience(X[~test], y[~test], X[test], y[test], task)


def file_digest(path: Path) -> str:
    with open(path, "rb") as fh:  # in chunks: never the whole file in memory
        return hashlib.file_digest(fh, "sha256").hexdigest()


def write_experience(exp: Experience, directory: str | Path, index: int, name: str) -> Path:
    """Write an accepted experience as `<index>-<name>.parquet`, atomically; return its path."""
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", name)[:60]
    out = Path(directory) / f"{index:04d}-{stem}.parquet"
    n_tr, n_te = len(exp.train_y), len(exp.test_y)
    df = pl.DataFrame(
        {
            "x": pl.Series("x", np.concatenate([exp.train_X, exp.test_X])).cast(
                pl.List(pl.Float32)
            ),
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


def _append(split: Split, X: np.ndarray, y: np.ndarray, experience: int, task: int) -> Split:
    n = len(y)
    return Split(
        np.concatenate([split.X, X]),
        np.concatenate([split.y, y]),
        np.concatenate([split.experience, np.full(n, experience, np.int32)]),
        np.concatenate([split.task, np.full(n, task, np.int32)]),
    )


def append_experiences(stream: Stream, directory: str | Path) -> Stream:
    """The stream with every accepted experience in `directory` appended, in order."""
    for path in accepted_files(directory):
        df = pl.read_parquet(path)
        test_rows = (df["split"] == "test").to_numpy()
        X, y = read_features(df, path), df["y"].to_numpy().astype(np.int64)
        task = int(df["task"][0])
        exp = Experience(
            X[~test_rows], y[~test_rows], X[test_rows], y[test_rows], None if task < 0 else task
        )
        stream = _with(stream, exp)
    return stream


PENDING = Path(".clflow") / "pending-update.json"  # accepted files whose update has not finished


def pending(project: str | Path) -> list[str]:
    """Accepted experience files that no update has trained and registered yet."""
    path = Path(project) / PENDING
    return list(json.loads(path.read_text())) if path.exists() else []


def set_pending(project: str | Path, files: list[str]) -> None:
    """Record (or, with [], clear) the files an update still owes the model; survives a failed
    run."""
    path = Path(project) / PENDING
    if not files:
        path.unlink(missing_ok=True)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, sorted(set(files)))


@dataclass(frozen=True)
class Intake:
    """What one intake did: accepted files (their new paths), rejected files with reasons, and
    files left for the next run (still being written)."""

    accepted: list[str]
    rejected: dict[str, str]
    waiting: list[str] = field(default_factory=list)


def _reject(path: Path, rejected_dir: Path, reason: str) -> None:
    """Move a bad entry aside (a rename, whatever it is) with its reason beside it."""
    rejected_dir.mkdir(parents=True, exist_ok=True)
    target, n = rejected_dir / path.name, 1
    while target.exists() or target.is_symlink():  # keep earlier rejects of the same name
        target, n = rejected_dir / f"{path.stem}-{n}{path.suffix}", n + 1
    (target.parent / f"{target.name}.reason.txt").write_text(reason + "\n")
    path.replace(target)


EntryState = Literal["ready", "waiting", "refused"]


def _entry_state(path: Path, now: float, settle: float) -> tuple[EntryState, str]:
    """Whether `path` can be read as an experience file now, and why not (judged from lstat:
    the entry is never opened here)."""
    st = path.lstat()
    if stat.S_ISLNK(st.st_mode):
        return "refused", "a symlink, not a regular file: copy the file itself into data/incoming/"
    if not stat.S_ISREG(st.st_mode):
        kind = "directory" if stat.S_ISDIR(st.st_mode) else "special file (FIFO, device, socket)"
        return "refused", f"a {kind}, not a regular file"
    if st.st_size > MAX_BYTES:
        return "refused", f"{st.st_size} bytes, over the {MAX_BYTES} byte limit for one experience"
    if now - st.st_mtime < settle:
        return "waiting", "modified just now: it may still be being written"
    return "ready", ""


def intake(
    incoming: str | Path,
    experiences: str | Path,
    stream: Stream,
    *,
    test_size: float = 0.3,
    seed: int = 0,
    duplicates: Policy = "keep",
    settle: float = SETTLE_SECONDS,
) -> Intake:
    """Validate every `*.parquet` in `incoming` against `stream`; accept into `experiences` or move
    aside.

    An accepted file is written (atomically) into `experiences` and its digest recorded
    before the source is removed, so a crash never loses a file: after one between the
    record and the removal, the source is rejected next time as already accepted. A crash
    between the write and the record (two renames apart) would accept it a second time.
    """
    incoming, experiences = Path(incoming), Path(experiences)
    rejected_dir = incoming / "rejected"
    if rejected_dir.exists() and not rejected_dir.is_dir():
        raise StreamError("must be a directory (bad files are moved there)", file=rejected_dir)
    seen = {entry.get("sha256") for entry in accepted_sources(experiences).values()}
    accepted, rejected, waiting = [], {}, []
    index = len(accepted_files(experiences))
    max_abs = float(np.abs(stream.train.X).max()) if len(stream.train) else None
    now = time.time()
    files = sorted(incoming.glob("*.parquet"))
    with Progress(len(files), "intake", unit="files", summary=bool(files)) as progress:
        for path in files:
            try:
                state, why = _entry_state(path, now, settle)
                if state == "waiting":
                    waiting.append(path.name)
                    progress.update(1)
                    continue
                if state == "refused":
                    raise StreamError(why, file=path)
                digest = file_digest(path)
                if digest in seen:
                    raise StreamError("the same file was already accepted", file=path)
                exp = read_experience(
                    path,
                    stream.n_features,
                    len(stream.classes),
                    test_size=test_size,
                    seed=seed,
                    n_tasks=n_task_ids(stream),
                    max_abs=max_abs,
                )
                # judge the stream this file would produce, as prepare will
                candidate = _with(stream, exp)
                apply_policy(candidate, duplicates, f"{path} appended to the stream")
            except (StreamError, OSError) as err:
                reason = err.line() if isinstance(err, StreamError) else f"{path}: {err.strerror}"
                rejected[path.name] = reason
                _reject(path, rejected_dir, reason)
                progress.update(1)
                continue
            out = write_experience(exp, experiences, index, path.stem)
            _record_source(experiences, out.name, path.name, digest)
            path.unlink()
            seen.add(digest)
            accepted.append(str(out))
            stream, index = candidate, index + 1
            progress.update(1, rows=len(exp.train_y) + len(exp.test_y))
    return Intake(accepted, rejected, waiting)


def _with(stream: Stream, exp: Experience) -> Stream:
    """`stream` with `exp` appended as its next experience; a new task gets the next unused id."""
    task = n_task_ids(stream) if exp.task is None else exp.task
    e = int(stream.train.experience.max()) + 1
    return replace(
        stream,
        train=_append(stream.train, exp.train_X, exp.train_y, e, task),
        test=_append(stream.test, exp.test_X, exp.test_y, e, task),
    )


def n_task_ids(stream: Stream) -> int:
    """One more than the largest task id in the stream."""
    return int(max(stream.train.task.max(), stream.test.task.max())) + 1


def accepted_sources(experiences: Path) -> dict[str, dict]:
    """{accepted file name: {source, sha256}} as the intake recorded them."""
    path = experiences / SOURCES_FILE
    return json.loads(path.read_text()) if path.exists() else {}


def _record_source(experiences: Path, accepted: str, source: str, digest: str) -> None:
    write_json(
        experiences / SOURCES_FILE,
        {**accepted_sources(experiences), accepted: {"source": source, "sha256": digest}},
    )


def example_experience(
    stream: Stream, *, rotate: float = 0.0, permute: bool = False, seed: int = 0, limit: int = 0
) -> pl.DataFrame:
    """A new-domain experience drawn from the stream's own rows (every class), for demos and tests.

    The rows are rotated (image streams) or pixel-permuted, so the experience is a
    genuine distribution shift with the stream's labels.
    """
    from clflow.streams.builders import permutation
    from clflow.streams.builders import rotate as rotate_images

    X = np.concatenate([stream.train.X, stream.test.X])
    y = np.concatenate([stream.train.y, stream.test.y])
    rows = np.random.default_rng(seed).permutation(len(y))[: limit or None]
    X, y = X[rows], y[rows]
    if rotate:
        if not stream.shape:
            raise StreamError("rotation needs the image shape (meta.json)", field="rotate")
        X = rotate_images(X, stream.shape, rotate)
    if permute:
        X = X[:, permutation(seed + 1, X.shape[1], seed)]
    keep = (
        ~pl.DataFrame({"x": X.tolist(), "y": y}).is_duplicated().to_numpy()
    )  # rotation can merge rows
    return pl.DataFrame(
        {"x": pl.Series("x", X[keep]).cast(pl.List(pl.Float32)), "y": pl.Series(y[keep])}
    )
