"""New experience files: validation with one-line reasons, intake (accept / move aside),
appending."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from clflow.errors import StreamError
from clflow.streams import Split, Stream
from clflow.streams.incoming import (
    accepted_files,
    append_experiences,
    example_experience,
    intake,
    read_experience,
)


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
    report = intake(incoming, experiences, tiny_stream())
    assert [p.name for p in accepted_files(experiences)] == ["0000-a_good.parquet"]
    assert (
        list(report.rejected) == ["b_bad.parquet"]
        and "feature length 3" in report.rejected["b_bad.parquet"]
    )
    assert (incoming / "rejected" / "b_bad.parquet").exists()
    assert "field 'x'" in (incoming / "rejected" / "b_bad.parquet.reason.txt").read_text()
    assert not list(incoming.glob("*.parquet"))
    write(incoming, good, "again.parquet")  # the same content once more
    report = intake(incoming, experiences, tiny_stream())
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
    intake(incoming, experiences, stream)
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
