import json

import numpy as np
import polars as pl
import pytest

from clflow.config import StreamConfig
from clflow.errors import StreamError
from clflow.streams import build_stream, load_stream, write_stream
from clflow.streams.schema import split_frame


@pytest.fixture(scope="module")
def stream():
    return build_stream(StreamConfig(source="digits", experiences=5))


@pytest.fixture
def stream_dir(tmp_path, stream):
    write_stream(stream, tmp_path / "s")
    return tmp_path / "s"


def test_round_trip(stream, stream_dir):
    back = load_stream(stream_dir)
    assert np.array_equal(back.train.X, stream.train.X) and np.array_equal(
        back.test.y, stream.test.y
    )
    assert back.classes == stream.classes and back.shape == (1, 8, 8)
    df = pl.read_parquet(stream_dir / "train.parquet")
    assert df.schema["x"] == pl.List(pl.Float32) and df.schema["y"] == pl.Int64
    assert df.schema["experience"] == pl.Int32


def corrupt(stream_dir, fn, name="train.parquet"):
    path = stream_dir / name
    fn(pl.read_parquet(path)).write_parquet(path)
    return path


CASES = {
    "missing column": (lambda df: df.drop("y"), "field 'y': missing column"),
    "string labels": (
        lambda df: df.with_columns(pl.col("y").cast(pl.Utf8)),
        "field 'y': expected an integer",
    ),
    "ragged x": (
        lambda df: df.with_columns(
            pl.when(pl.int_range(pl.len()) == 3)
            .then(pl.col("x").list.head(5))
            .otherwise(pl.col("x"))
            .alias("x")
        ),
        "field 'x': ragged feature length",
    ),
    "nan x": (
        lambda df: df.with_columns(
            pl.when(pl.int_range(pl.len()) == 7)
            .then(pl.col("x").list.eval(pl.element() * float("nan")))
            .otherwise(pl.col("x"))
            .alias("x")
        ),
        "field 'x': NaN or inf.*row 7",
    ),
    "label out of range": (
        lambda df: df.with_columns(pl.lit(12, pl.Int64).alias("y")),
        "field 'y': row 0: label 12 outside",
    ),
    "empty": (lambda df: df.head(0), "no rows: the stream is empty"),
    "experience gap": (
        lambda df: df.filter(pl.col("experience") != 1),
        "field 'experience': experience 1 has no rows",
    ),
    "x not a list": (
        lambda df: df.with_columns(pl.lit(1.0).alias("x")),
        "field 'x': expected a list",
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_schema_violations_give_one_readable_line(stream_dir, case):
    fn, pattern = CASES[case]
    path = corrupt(stream_dir, fn)
    with pytest.raises(StreamError, match=pattern) as err:
        load_stream(stream_dir)
    line = err.value.line()
    assert line.startswith(str(path)) and "\n" not in line


def test_identical_rows_are_data_not_an_error(stream_dir):
    """Duplicates are the prepare stage's policy (stream.duplicates), never a load error."""
    corrupt(stream_dir, lambda df: pl.concat([df, df.slice(10, 2)]))
    assert len(load_stream(stream_dir).train) == len(pl.read_parquet(stream_dir / "train.parquet"))


def test_normalizer_round_trips_through_meta_json(stream, stream_dir):
    back = load_stream(stream_dir)
    assert np.array_equal(back.normalizer.mean, stream.normalizer.mean)
    assert np.array_equal(back.normalizer.std, stream.normalizer.std)
    meta = json.loads((stream_dir / "meta.json").read_text())
    meta["normalize"]["mean"] = meta["normalize"]["mean"][:3]
    (stream_dir / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(
        StreamError, match="meta.json: field 'normalize': normalizer has 3 features"
    ):
        load_stream(stream_dir)
    (stream_dir / "meta.json").write_text("{not json")
    with pytest.raises(StreamError, match="meta.json: not valid JSON"):
        load_stream(stream_dir)


def test_feature_length_mismatch_between_splits(stream_dir):
    corrupt(
        stream_dir,
        lambda df: df.with_columns(pl.col("x").list.concat(pl.lit([0.5]))),
        "test.parquet",
    )
    with pytest.raises(StreamError, match="test.parquet: field 'x': feature length 65 differs"):
        load_stream(stream_dir)


def test_corrupt_parquet(stream_dir):
    (stream_dir / "train.parquet").write_bytes(b"garbage")
    with pytest.raises(StreamError, match="train.parquet: not a readable parquet"):
        load_stream(stream_dir)


def test_bad_classes_json(stream_dir):
    (stream_dir / "classes.json").write_text(json.dumps({"a": 1}))
    with pytest.raises(StreamError, match="classes.json: must be a non-empty list"):
        load_stream(stream_dir)


def test_defaults_without_optional_files(stream_dir):
    (stream_dir / "classes.json").unlink()
    corrupt(stream_dir, lambda df: df.drop("task"))
    s = load_stream(stream_dir)
    assert s.classes[:2] == ["class 0", "class 1"]
    assert np.array_equal(s.train.task, s.train.experience)


def test_array_dtype_accepted(tmp_path, stream):
    df = split_frame(stream.train).with_columns(pl.col("x").list.to_array(64))
    d = tmp_path / "arr"
    write_stream(stream, d)
    df.write_parquet(d / "train.parquet")
    assert load_stream(d).train.X.shape == (len(stream.train), 64)
