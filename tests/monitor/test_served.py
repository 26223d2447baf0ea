"""The served-traffic log: segments written whole, rotated, bounded; bad logs refused in a line."""

from __future__ import annotations

import subprocess
import sys
import time
from datetime import UTC, datetime

import numpy as np
import polars as pl
import pytest
from conftest import file_hashes

from clflow.monitor.served import (
    COLUMNS,
    EmptyWindow,
    Recorder,
    Rotation,
    ServedLogError,
    read_window,
    segments,
    write_to_label,
)


def answered(recorder: Recorder, n: int, start: float = 0.0) -> np.ndarray:
    X = (start + np.arange(n * 4, dtype=np.float32)).reshape(n, 4)
    recorder.record(X, np.arange(n) % 3, np.arange(n) % 2, np.full(n, 0.9))
    return X


def test_rows_reach_a_segment_on_close_with_every_column(tmp_path):
    rec = Recorder(tmp_path, "m", "3")
    X = answered(rec, 5)
    assert segments(tmp_path) == []  # kept in memory until a segment is due
    rec.close()
    (path,) = segments(tmp_path)
    df = pl.read_parquet(path)
    assert dict(df.schema) == COLUMNS
    assert np.array_equal(np.stack(df["x"].to_list()), X)
    assert df["model_version"].unique().to_list() == ["3"]
    assert df["label"].to_list() == [0, 1, 2, 0, 1]


def test_the_window_keeps_answer_order_across_the_workers_segments(tmp_path):
    """Two serving workers, two recorders: the one that answered first flushes last, so its
    segment is named after the other's; the window still lists the rows as they were answered."""
    first, second = Recorder(tmp_path, "m", "1"), Recorder(tmp_path, "m", "1")
    early = answered(first, 3)
    late = answered(second, 2, start=100.0)
    second.close()
    time.sleep(0.01)  # a later name
    first.close()
    assert [pl.read_parquet(p).height for p in segments(tmp_path)] == [2, 3]
    window = read_window(tmp_path, 10)
    assert np.array_equal(np.stack(window.rows["x"].to_list()), np.concatenate([early, late]))


def test_segments_rotate_by_size_and_age_and_the_log_is_bounded(tmp_path):
    by_size = Recorder(tmp_path / "s", "m", "1", Rotation(segment_bytes=100, max_bytes=10**9))
    for i in range(3):
        answered(by_size, 4, start=i)  # 4 rows of 4 floats and their answers: over 100 bytes
        deadline = time.monotonic() + 10
        while len(segments(tmp_path / "s")) <= i and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(segments(tmp_path / "s")) == i + 1  # written without waiting for its age
    answered(by_size, 2)
    by_size.close()
    assert [pl.read_parquet(p).height for p in segments(tmp_path / "s")] == [4, 4, 4, 2]
    by_age = Recorder(tmp_path / "a", "m", "1", Rotation(segment_seconds=0.2))
    answered(by_age, 2)
    deadline = time.monotonic() + 10
    while not segments(tmp_path / "a") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(segments(tmp_path / "a")) == 1  # written without a close
    by_age.close()
    bounded = Recorder(tmp_path / "b", "m", "1", Rotation(max_bytes=1))
    for i in range(3):
        answered(bounded, 3, start=i)
        bounded.flush()
    (kept,) = segments(tmp_path / "b")  # only the newest survives a 1-byte bound
    assert pl.read_parquet(kept)["x"][0][0] == 2.0
    bounded.close()


def test_the_window_is_the_newest_rows_of_the_newest_version(tmp_path):
    old = Recorder(tmp_path, "m", "1")
    answered(old, 3, start=100)
    old.close()
    new = Recorder(tmp_path, "m", "2")
    answered(new, 4)
    new.flush()
    middle = datetime.now(UTC)
    answered(new, 4, start=1000)
    new.close()
    found = read_window(tmp_path, 6)
    assert found.version == "2" and found.X.shape == (6, 4)
    assert found.X[-1, -1] == 1015.0  # the newest row last
    assert read_window(tmp_path, 100).X.shape == (8, 4)  # version 1's rows never mix in
    assert read_window(tmp_path, 100, since=middle).X.shape == (4, 4)
    with pytest.raises(EmptyWindow, match="no served rows after"):
        read_window(tmp_path, 10, since=datetime.now(UTC))
    to_label = write_to_label(found, tmp_path / "to-label")
    assert pl.read_parquet(to_label).columns == [
        "x",
        "timestamp",
        "predicted",
        "expert",
        "confidence",
    ]


@pytest.mark.parametrize(
    "damage, words",
    [
        ("truncate", "not a readable parquet file"),
        ("drop_column", "field 'confidence': missing column"),
        ("retype", "field 'label': column of"),
        ("ragged", "field 'x': rows of [3, 4] features"),
    ],
)
def test_a_bad_log_is_one_line_and_changes_nothing(tmp_path, damage, words):
    rec = Recorder(tmp_path / "served", "m", "1")
    answered(rec, 4)
    path = rec.close()
    df = pl.read_parquet(path)
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[:-30])
    elif damage == "drop_column":
        df.drop("confidence").write_parquet(path)
    elif damage == "retype":
        df.with_columns(pl.col("label").cast(pl.Float64)).write_parquet(path)
    else:
        short = df.head(1).with_columns(pl.Series("x", [[1.0, 2.0, 3.0]], pl.List(pl.Float32)))
        pl.concat([short, df.tail(3)]).write_parquet(path)
    with pytest.raises(ServedLogError) as err:
        read_window(tmp_path / "served", 10)
    assert words in err.value.line()
    before = file_hashes(tmp_path, "served")
    proc = subprocess.run(
        [sys.executable, "-m", "clflow.cli", "drift", "--served", str(tmp_path / "served")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and words in proc.stderr, proc.stderr
    assert file_hashes(tmp_path, "served") == before


def test_an_empty_or_missing_log_is_an_empty_window(tmp_path):
    with pytest.raises(EmptyWindow, match="no served-traffic log here"):
        read_window(tmp_path / "nowhere", 10)
    (tmp_path / "served").mkdir()
    with pytest.raises(EmptyWindow, match="an empty window"):
        read_window(tmp_path / "served", 10)
    proc = subprocess.run(
        [sys.executable, "-m", "clflow.cli", "drift", "--served", "served", "--json"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr == "error: served: no served rows: an empty window\n"
