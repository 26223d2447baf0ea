"""The served-traffic log: parquet segments under `data/served/` (this module owns the format).

Each answered request appends its rows: when it was answered (`timestamp`, UTC), which model
answered (`model`, `model_version`), the raw features (`x`), and the model's answer (`label`,
`expert`, `confidence`: the selector's probability of the routed expert); for a text model, the
document too (`text`, null otherwise; `x` is then its embedding). Rows collect in
memory and go to disk as one segment when the segment is big or old enough; a segment is
written to a temp file and renamed, so a reader never sees half of one, and the oldest segments
are deleted when the log outgrows its bound.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import polars as pl

from clflow.errors import ClflowError
from clflow.util.io import write_parquet

SEGMENT_GLOB = "segment-*.parquet"
COLUMNS = {
    "timestamp": pl.Datetime("us", "UTC"),
    "model": pl.String,
    "model_version": pl.String,
    "x": pl.List(pl.Float32),
    "label": pl.Int64,
    "expert": pl.Int64,
    "confidence": pl.Float32,
    "text": pl.String,
}
OPTIONAL = {"text"}  # segments written before text models have none


class ServedLogError(ClflowError):
    """A served-traffic log that cannot be read as one."""


class EmptyWindow(ServedLogError):
    """No served rows to score (yet): no log, or nothing after `since`."""


@dataclass(frozen=True)
class Rotation:
    """When a segment is written and how much of the log is kept."""

    segment_bytes: int = 4 << 20  # write a segment once its rows hold this much ...
    segment_seconds: float = 60.0  # ... or once its oldest row is this old
    max_bytes: int = 256 << 20  # then delete the oldest segments beyond this total


def segments(directory: str | Path) -> list[Path]:
    """The complete segments of a log, oldest first (names sort by time; temp files never
    match)."""
    return sorted(Path(directory).glob(SEGMENT_GLOB))


class Recorder:
    """Appends answered rows to the log; a background thread writes segments, so serving never
    waits on the disk. `close()` writes what is left."""

    def __init__(
        self,
        directory: str | Path,
        model: str,
        version: str,
        rotation: Rotation = Rotation(),  # noqa: B008  (frozen: shared safely)
    ):
        self.directory = Path(directory)
        self.model, self.version, self.rotation = model, version, rotation
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._rows: list[dict] = []
        self._bytes = 0
        self._oldest: float | None = None
        self._seq = 0
        self._due = threading.Event()
        self._stopped = threading.Event()
        self._writer = threading.Thread(target=self._run, name="clflow-recorder", daemon=True)
        self._writer.start()

    def record(self, X: np.ndarray, label, expert, confidence, text=None) -> None:
        """Keep one answered request's rows (cheap: the disk is the writer thread's); `text`:
        the documents of a text model's request. Arrays, not the model's answer frame: a
        pandas frame a request holds several times the memory of its rows."""
        X = np.asarray(X, dtype=np.float32).reshape(len(X), -1)
        batch = {
            "timestamp": datetime.now(UTC),
            "x": X,
            "label": np.asarray(label, dtype=np.int64),
            "expert": np.asarray(expert, dtype=np.int64),
            "confidence": np.asarray(confidence, dtype=np.float32),
            "text": text,
        }
        with self._lock:
            self._rows.append(batch)
            self._bytes += X.nbytes + 20 * len(X) + sum(len(t) for t in text or ())
            self._oldest = self._oldest or time.monotonic()
            if self._bytes >= self.rotation.segment_bytes:
                self._due.set()

    def _run(self) -> None:
        while not self._stopped.is_set():
            self._due.wait(timeout=min(self.rotation.segment_seconds, 1.0))
            self._due.clear()
            with self._lock:
                age = time.monotonic() - (self._oldest or time.monotonic())
                due = self._bytes >= self.rotation.segment_bytes
            if due or age >= self.rotation.segment_seconds:
                self.flush()

    def flush(self) -> Path | None:
        """Write the rows kept so far as one segment (None when there are none)."""
        with self._lock:
            batches, self._rows, self._bytes, self._oldest = self._rows, [], 0, None
            self._seq += 1  # flush runs on the writer thread and on callers' threads
            seq = self._seq
        if not batches:
            return None
        frame = segment_frame(batches, self.model, self.version)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        path = self.directory / f"segment-{stamp}-{os.getpid()}-{seq:06d}.parquet"
        write_parquet(path, frame)
        prune(self.directory, self.rotation.max_bytes)
        return path

    def close(self) -> Path | None:
        """Stop the writer and write the rows left."""
        self._stopped.set()
        self._due.set()
        self._writer.join(timeout=30)
        return self.flush()


def segment_frame(batches: list[dict], model: str, version: str) -> pl.DataFrame:
    """The rows of several answered requests as one frame in the log's schema. Built from
    whole numpy columns, not Python lists: a server's worker holds the GIL while it runs (a
    4 MiB segment: about 30 ms, where lists took 160 ms)."""
    n = [len(b["x"]) for b in batches]
    X = np.concatenate([b["x"] for b in batches])
    # UTC datetimes as naive datetime64 (numpy has no time zones), then marked UTC again
    stamps = np.array([b["timestamp"].replace(tzinfo=None) for b in batches], "datetime64[us]")
    texts = [t for b, k in zip(batches, n, strict=True) for t in (b["text"] or [None] * k)]
    return pl.DataFrame(
        {
            "timestamp": pl.Series(np.repeat(stamps, n)).dt.replace_time_zone("UTC"),
            "model": pl.repeat(model, len(X), eager=True, dtype=pl.String),
            "model_version": pl.repeat(version, len(X), eager=True, dtype=pl.String),
            "x": pl.Series("x", X).cast(pl.List(pl.Float32)),
            "label": np.concatenate([b["label"] for b in batches]),
            "expert": np.concatenate([b["expert"] for b in batches]),
            "confidence": np.concatenate([b["confidence"] for b in batches]),
            "text": pl.Series("text", texts, dtype=pl.String),
        },
        schema=COLUMNS,
    )


def prune(directory: Path, max_bytes: int) -> list[Path]:
    """Delete the oldest segments until the log holds at most `max_bytes` (the newest stays)."""
    found = []
    for path in segments(directory):
        try:
            found.append((path, path.stat().st_size))
        except FileNotFoundError:  # another worker's recorder pruned it first
            continue
    total = sum(size for _, size in found)
    removed = []
    for path, size in found[:-1]:
        if total <= max_bytes:
            break
        path.unlink(missing_ok=True)
        total -= size
        removed.append(path)
    return removed


def read_segment(path: Path) -> pl.DataFrame:
    """One segment, checked against the log's schema (one line naming the file and field)."""
    from clflow.errors import StreamError
    from clflow.streams.schema import read_frame

    try:
        df = read_frame(path, set(COLUMNS) - OPTIONAL, empty="an empty segment")
    except StreamError as err:
        raise ServedLogError(err.message, file=path, field=err.field) from None
    if "text" not in df.columns:
        df = df.with_columns(pl.lit(None, pl.String).alias("text"))
    for name, dtype in COLUMNS.items():
        if df.schema[name] != dtype:
            raise ServedLogError(
                f"column of {df.schema[name]}, expected {dtype}", file=path, field=name
            )
    return df.select(list(COLUMNS))


@dataclass(frozen=True)
class Window:
    """The newest served rows of one model version."""

    rows: pl.DataFrame
    model: str
    version: str
    segments: list[Path]

    @property
    def X(self) -> np.ndarray:
        return np.stack(self.rows["x"].to_list()).astype(np.float32)

    @property
    def end(self) -> datetime:
        return self.rows["timestamp"].max()


def read_window(directory: str | Path, window: int, since: datetime | None = None) -> Window:
    """The newest `window` rows (fewer if the log holds fewer) answered after `since` by the
    model version that answered last; older versions' rows are left out (their reference is
    another)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise EmptyWindow("no served-traffic log here (start `clflow serve`)", file=directory)
    taken: list[pl.DataFrame] = []
    used: list[Path] = []
    version = model = None
    count = 0
    for path in reversed(segments(directory)):
        df = read_segment(path)
        if since is not None:
            df = df.filter(pl.col("timestamp") > since)
        if model is None:
            if not df.height:
                continue
            model, version = df["model"][-1], df["model_version"][-1]
        df = df.filter((pl.col("model") == model) & (pl.col("model_version") == version))
        if df.height:
            taken.append(df)
            used.append(path)
            count += df.height
        if count >= window or (taken and not df.height):  # older rows: an older version's
            break
    if not count:
        after = f" after {since.isoformat()}" if since is not None else ""
        raise EmptyWindow(f"no served rows{after}: an empty window", file=directory)
    # answer order: `clflow serve --workers N` writes one segment per worker, named when it is
    # flushed, so one worker's rows may be older than another's earlier-named segment
    rows = pl.concat(list(reversed(taken))).sort("timestamp", maintain_order=True).tail(window)
    widths = rows["x"].list.len().unique()
    if len(widths) != 1:
        raise ServedLogError(
            f"rows of {sorted(widths.to_list())} features in one model's traffic",
            file=used[-1],
            field="x",
        )
    return Window(rows, str(model), str(version), list(reversed(used)))


def write_to_label(window: Window, directory: str | Path) -> Path:
    """The window's rows as a file to annotate: add a `y` column and drop it into
    `data/incoming/` (the served answers stay beside `x` as hints; intake ignores them). A text
    model's rows keep their documents, which a text stream's intake reads."""
    end = window.end.strftime("%Y%m%dT%H%M%S%fZ")
    path = Path(directory) / f"{window.model}-v{window.version}-{end}.parquet"
    text = ["text"] if window.rows["text"].null_count() < window.rows.height else []
    frame = window.rows.select("x", *text, "timestamp", "label", "expert", "confidence")
    write_parquet(path, frame.rename({"label": "predicted"}))
    return path
