"""New experience files: validation with one-line reasons, intake (accept / move aside),
appending."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from clflow.errors import StreamError
from clflow.streams import Split, Stream
from clflow.streams.demo import example_experience
from clflow.streams.experience import accepted_files, append_experiences, read_experience
from clflow.streams.intake import intake


def tiny_stream(n_features: int = 4, n_classes: int = 3) -> Stream:
    rng = np.random.default_rng(0)

    def split(n):
        exp = np.repeat(np.arange(2, dtype=np.int32), n // 2)
        return Split(
            rng.normal(size=(n, n_features)).astype(np.float32),
            rng.integers(0, n_classes, n),
            exp,
            exp.copy(),
        )

    return Stream(split(20), split(10), [f"c{i}" for i in range(n_classes)], (1, 2, 2))


def frame(n: int = 20, d: int = 4, **cols) -> pl.DataFrame:
    rng = np.random.default_rng(1)
    base = {
        "x": pl.Series("x", rng.normal(size=(n, d)).astype(np.float32)).cast(pl.List(pl.Float32)),
        "y": pl.Series("y", rng.integers(0, 3, n), dtype=pl.Int64),
    }
    return pl.DataFrame({**base, **cols})


def write(tmp_path, df: pl.DataFrame, name: str = "new.parquet"):
    path = tmp_path / name
    df.write_parquet(path)
    return path


def test_valid_file_is_split_and_keeps_every_row(tmp_path):
    exp = read_experience(write(tmp_path, frame(20)), 4, 3, test_size=0.25, seed=0)
    assert len(exp.train_y) == 15 and len(exp.test_y) == 5 and exp.task is None


def test_split_column_and_task_are_honoured(tmp_path):
    df = frame(6, split=["train"] * 4 + ["test"] * 2, task=pl.Series([1] * 6, dtype=pl.Int32))
    exp = read_experience(write(tmp_path, df), 4, 3)
    assert len(exp.train_y) == 4 and len(exp.test_y) == 2 and exp.task == 1


@pytest.mark.parametrize(
    "df, field, words",
    [
        (frame(10).drop("y"), "y", "missing column"),
        (frame(10, d=5), "x", "feature length 5"),
        (frame(10).with_columns(pl.lit(7, dtype=pl.Int64).alias("y")), "y", "label 7 outside"),
        (frame(10).with_columns(pl.col("y").cast(pl.Float64)), "y", "integer"),
        (pl.concat([frame(10), frame(10).head(1)]), "x", "duplicate rows"),
        (frame(4, split=["train", "train", "valid", "test"]), "split", "'valid'"),
        (frame(4, split=["train"] * 4), "split", "both train and test"),
        (frame(4, task=pl.Series([0, 0, 1, 1], dtype=pl.Int32)), "task", "one task id"),
        (frame(0), None, "empty"),
    ],
)
def test_bad_files_give_one_line_naming_file_and_field(tmp_path, df, field, words):
    path = write(tmp_path, df)
    with pytest.raises(StreamError) as err:
        read_experience(path, 4, 3)
    line = err.value.line()
    assert str(path) in line and words in line and "\n" not in line
    assert err.value.field == field


def test_nan_features_are_rejected(tmp_path):
    df = frame(10)
    x = np.stack(df["x"].to_list())
    x[3, 1] = np.nan
    df = df.with_columns(pl.Series("x", x).cast(pl.List(pl.Float32)))
    with pytest.raises(StreamError, match="NaN"):
        read_experience(write(tmp_path, df), 4, 3)


def test_corrupt_file_is_rejected(tmp_path):
    path = tmp_path / "broken.parquet"
    path.write_bytes(b"PAR1 not really")
    with pytest.raises(StreamError, match="not a readable parquet"):
        read_experience(path, 4, 3)


def test_intake_accepts_good_moves_bad_aside_and_rejects_a_repeat(tmp_path):
    incoming, experiences = tmp_path / "incoming", tmp_path / "experiences"
    incoming.mkdir()
    good = frame(20)
    write(incoming, good, "a_good.parquet")
    write(incoming, frame(10, d=3), "b_bad.parquet")
    report = intake(incoming, experiences, tiny_stream(), settle=0)
    assert [p.name for p in accepted_files(experiences)] == ["0000-a_good.parquet"]
    assert (
        list(report.rejected) == ["b_bad.parquet"]
        and "feature length 3" in report.rejected["b_bad.parquet"]
    )
    assert (incoming / "rejected" / "b_bad.parquet").exists()
    assert "field 'x'" in (incoming / "rejected" / "b_bad.parquet.reason.txt").read_text()
    assert not list(incoming.glob("*.parquet"))
    write(incoming, good, "again.parquet")  # the same content once more
    report = intake(incoming, experiences, tiny_stream(), settle=0)
    assert not report.accepted and "already accepted" in report.rejected["again.parquet"]
    assert len(accepted_files(experiences)) == 1


def test_append_adds_experiences_in_order_with_new_or_recurring_tasks(tmp_path):
    stream, incoming, experiences = tiny_stream(), tmp_path / "in", tmp_path / "exp"
    incoming.mkdir()
    write(incoming, frame(10), "a.parquet")
    write(
        incoming,
        frame(8, task=pl.Series([0] * 8, dtype=pl.Int32)).with_columns(pl.col("y") % 2),
        "b.parquet",
    )
    intake(incoming, experiences, stream, settle=0)
    grown = append_experiences(stream, experiences)
    assert grown.n_experiences == 4
    np.testing.assert_array_equal(
        grown.train.X[: len(stream.train)], stream.train.X
    )  # nothing lost
    assert set(grown.train.task[grown.train.experience == 2]) == {2}  # a new task id
    assert set(grown.train.task[grown.train.experience == 3]) == {0}  # a recurring task
    assert (grown.test.experience == 2).sum() == 3 and (grown.test.experience == 3).sum() > 0


def test_example_experience_is_a_valid_shifted_file(tmp_path):
    stream = tiny_stream()
    df = example_experience(stream, rotate=90, limit=20)
    exp = read_experience(write(tmp_path, df), 4, 3)
    assert len(exp.train_y) + len(exp.test_y) == df.height > 0
    assert not np.allclose(np.stack(df["x"].to_list())[:1], stream.train.X[:1])


def test_non_regular_entries_are_moved_aside_unread_and_good_files_still_get_in(tmp_path):
    import os

    incoming, experiences = tmp_path / "incoming", tmp_path / "experiences"
    incoming.mkdir()
    (incoming / "a_dir.parquet").mkdir()
    (incoming / "b_dangling.parquet").symlink_to(tmp_path / "nowhere")
    (incoming / "c_zero.parquet").symlink_to("/dev/zero")  # reading it would never end
    os.mkfifo(incoming / "d_fifo.parquet")  # opening it would block
    write(incoming, frame(20), "e_good.parquet")
    report = intake(incoming, experiences, tiny_stream(), settle=0)
    assert [p.name for p in accepted_files(experiences)] == ["0000-e_good.parquet"]
    assert "a directory, not a regular file" in report.rejected["a_dir.parquet"]
    assert "a symlink" in report.rejected["b_dangling.parquet"]
    assert "a symlink" in report.rejected["c_zero.parquet"]
    assert "special file" in report.rejected["d_fifo.parquet"]
    assert sorted(p.name for p in (incoming / "rejected").iterdir() if "reason" not in p.name) == [
        "a_dir.parquet",
        "b_dangling.parquet",
        "c_zero.parquet",
        "d_fifo.parquet",
    ]


def test_a_file_still_being_written_is_left_for_the_next_run(tmp_path):
    import os
    import time

    incoming, experiences = tmp_path / "incoming", tmp_path / "experiences"
    incoming.mkdir()
    path = write(incoming, frame(20), "fresh.parquet")
    report = intake(incoming, experiences, tiny_stream())  # modified just now
    assert report.waiting == ["fresh.parquet"] and not report.accepted and not report.rejected
    assert path.exists() and not (incoming / "rejected").exists()
    os.utime(path, (time.time() - 10,) * 2)  # the write has settled
    assert len(intake(incoming, experiences, tiny_stream()).accepted) == 1


def test_intake_judges_the_stream_the_file_would_produce(tmp_path):
    stream = tiny_stream()
    incoming, experiences = tmp_path / "incoming", tmp_path / "experiences"
    incoming.mkdir()
    copy = pl.DataFrame(
        {
            "x": pl.Series("x", stream.train.X).cast(pl.List(pl.Float32)),
            "y": pl.Series("y", stream.train.y, dtype=pl.Int64),
        }
    )  # the stream's own training rows: a poisoned experience under `duplicates: error`
    write(incoming, copy, "copy.parquet")
    report = intake(incoming, experiences, stream, settle=0, duplicates="error")
    assert not report.accepted and "duplicate rows" in report.rejected["copy.parquet"]
    assert "appended to the stream" in report.rejected["copy.parquet"]
    # under `keep` the same rows are allowed (counted by prepare)
    (incoming / "rejected" / "copy.parquet").rename(incoming / "copy.parquet")
    assert len(intake(incoming, experiences, stream, settle=0).accepted) == 1


def test_unknown_task_ids_and_absurd_values_are_refused(tmp_path):
    stream = tiny_stream()
    with pytest.raises(StreamError, match=r"task 1000 is not one of the stream's tasks \(0..1\)"):
        read_experience(write(tmp_path, frame(20, task=[1000] * 20)), 4, 3, n_tasks=2)
    big = frame(20).with_columns(pl.col("x").list.eval(pl.element() * 1e30))
    with pytest.raises(
        StreamError, match=r"field 'x': value .*e\+30 at row \d+ is over 1000 times"
    ):
        read_experience(write(tmp_path, big), 4, 3, max_abs=float(abs(stream.train.X).max()))


def test_a_rejected_path_that_is_a_file_stops_intake_before_anything_moves(tmp_path):
    incoming, experiences = tmp_path / "incoming", tmp_path / "experiences"
    incoming.mkdir()
    (incoming / "rejected").write_text("oops")
    good = write(incoming, frame(20), "good.parquet")
    with pytest.raises(StreamError, match="rejected: must be a directory"):
        intake(incoming, experiences, tiny_stream(), settle=0)
    assert good.exists() and not experiences.exists()


@pytest.mark.parametrize(
    "content",
    [
        "{not json",
        "42",
        '{"a": 1}',
        '["data/experiences/0000-never-existed.parquet"]',
        '["../../etc/passwd"]',
        "directory",
    ],
)
def test_a_pending_record_that_set_pending_did_not_write_is_one_line(tmp_path, content):
    from clflow.streams.intake import PENDING, pending, set_pending

    experiences = tmp_path / "data" / "experiences"
    experiences.mkdir(parents=True)
    good = experiences / "0000-new.parquet"
    good.write_bytes(b"rows")
    set_pending(tmp_path, [str(good)])
    assert pending(tmp_path) == [str(good)]  # what set_pending writes is read back
    path = tmp_path / PENDING
    if content == "directory":
        path.unlink()
        path.mkdir()
    else:
        path.write_text(content)
    with pytest.raises(StreamError) as err:
        pending(tmp_path)
    assert err.value.file == str(path) and "\n" not in err.value.line()


def last_written(path, seconds_ago: float):
    import os
    import time

    os.utime(path, (time.time() - seconds_ago,) * 2)
    return path


def test_a_parquet_bomb_is_refused_from_its_footer_before_a_row_is_decoded(tmp_path, monkeypatch):
    """A few hundred kB of compressed zeros that decode to over a million rows."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from clflow.streams import experience

    incoming, experiences = tmp_path / "incoming", tmp_path / "experiences"
    incoming.mkdir()
    rows = 100_000
    chunk = pa.table(
        {
            "x": pa.FixedSizeListArray.from_arrays(pa.array(np.zeros(rows * 4, np.float32)), 4),
            "y": pa.array(np.zeros(rows, np.int64)),
        }
    )
    bomb = incoming / "bomb.parquet"
    with pq.ParquetWriter(bomb, chunk.schema, compression="zstd") as writer:
        for _ in range(experience.MAX_ROWS // rows + 1):
            writer.write_table(chunk)
    assert bomb.stat().st_size < 2_000_000  # small on disk
    write(incoming, frame(20), "good.parquet")
    decoded = []
    monkeypatch.setattr(pl, "read_parquet", lambda *a, **k: decoded.append(a) or frame(20))
    report = intake(incoming, experiences, tiny_stream(), settle=0)
    assert "over the 1,000,000-row limit" in report.rejected["bomb.parquet"]
    assert len(decoded) == 1  # the good file only: the bomb was never decoded
    assert (incoming / "rejected" / "bomb.parquet").exists()
    assert [p.name for p in accepted_files(experiences)] == ["0000-good.parquet"]


def test_an_incomplete_file_waits_for_its_writer_and_then_gets_in(tmp_path):
    incoming, experiences = tmp_path / "incoming", tmp_path / "experiences"
    incoming.mkdir()
    whole = write(tmp_path, frame(20), "whole.parquet").read_bytes()
    part = incoming / "new.parquet"
    part.write_bytes(whole[: len(whole) // 2])
    last_written(part, 10)  # the writer paused past the 2 s settle time
    report = intake(incoming, experiences, tiny_stream(), settle=0)
    assert report.waiting == ["new.parquet"] and not report.rejected and not report.accepted
    assert part.read_bytes() == whole[: len(whole) // 2]  # untouched
    part.write_bytes(whole)  # the writer finished
    report = intake(incoming, experiences, tiny_stream(), settle=0)
    assert [p.name for p in accepted_files(experiences)] == ["0000-new.parquet"]
    # a file that never gets its footer is refused once its writer has been gone long enough
    (incoming / "cut.parquet").write_bytes(whole[:100])
    last_written(incoming / "cut.parquet", 3600)
    report = intake(incoming, experiences, tiny_stream(), settle=0, incomplete_wait=60)
    assert "not a complete parquet file (no footer yet) for 60 s" in report.rejected["cut.parquet"]


def test_the_recorded_digest_is_of_the_bytes_taken_in(tmp_path, monkeypatch):
    """The file is rewritten in place just after intake opens it: the rows taken in and the
    SHA-256 recorded for them come from the same bytes."""
    import builtins
    import hashlib
    import json
    import os

    incoming, experiences = tmp_path / "incoming", tmp_path / "experiences"
    incoming.mkdir()
    first = frame(20)
    path = write(incoming, first, "new.parquet")
    content = path.read_bytes()
    second = write(tmp_path, first.with_columns(pl.col("x").list.eval(pl.element() * 2)), "v2")
    real_open = builtins.open

    def open_then_rewrite(file, *args, **kwargs):
        handle = real_open(file, *args, **kwargs)
        if str(file) == str(path) and second.exists():
            os.replace(second, path)  # a writer replaces the file under intake
        return handle

    monkeypatch.setattr(builtins, "open", open_then_rewrite)
    intake(incoming, experiences, tiny_stream(), settle=0)
    monkeypatch.setattr(builtins, "open", real_open)
    sources = json.loads((experiences / "sources.json").read_text())
    assert sources["0000-new.parquet"]["sha256"] == hashlib.sha256(content).hexdigest()
    taken = pl.read_parquet(experiences / "0000-new.parquet")["x"].to_list()
    assert sorted(map(tuple, taken)) == sorted(map(tuple, first["x"].to_list()))


def test_waiting_for_files_returns_once_one_has_settled(tmp_path):
    """What a drift-triggered update does before intake: wait for the labelled file."""
    import os
    import threading
    import time

    from clflow.streams.intake import wait_for_files

    assert wait_for_files(tmp_path, 0.3, poll=0.05) == []  # the time ran out: nothing came
    late = tmp_path / "labelled.parquet"
    (tmp_path / "notes.txt").write_text("not an experience")

    def deliver():
        time.sleep(0.3)
        late.write_bytes(b"x")
        os.utime(late, (time.time() - 10,) * 2)  # written and closed a while ago

    threading.Thread(target=deliver).start()
    started = time.monotonic()
    assert wait_for_files(tmp_path, 30, poll=0.05) == ["labelled.parquet"]
    assert time.monotonic() - started < 10  # taken at once, not at the deadline
