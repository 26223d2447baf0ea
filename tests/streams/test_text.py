"""Text streams: documents validated, embedded once (the cache), kept beside the features."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from conftest import TEXT_CLASSES, write_text_stream

from clflow.config import StreamConfig
from clflow.errors import StreamError
from clflow.sentence import EmbeddingCache
from clflow.streams import build_stream, load_stream, write_stream
from clflow.streams.experience import (
    TextInput,
    append_experiences,
    read_experience,
    write_experience,
)
from clflow.streams.intake import intake


@pytest.fixture(scope="module")
def text_dir(tmp_path_factory):
    return write_text_stream(tmp_path_factory.mktemp("text") / "stream")


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("embeddings")


def test_text_stream_is_embedded_and_keeps_its_documents(text_dir, cache_dir, tmp_path):
    cache = EmbeddingCache(directory=cache_dir)
    stream = build_stream(StreamConfig(source="text", path=str(text_dir)), cache.embed)
    assert stream.is_text and stream.classes == TEXT_CLASSES
    assert stream.n_features == 384 and stream.n_experiences == 2
    assert cache.n_encoded_ == len(stream.train) + len(stream.test) == 40
    np.testing.assert_allclose(np.linalg.norm(stream.train.X, axis=1), 1.0, atol=1e-5)
    assert stream.train.text[0] == pl.read_parquet(text_dir / "train.parquet")["text"][0]
    write_stream(stream, tmp_path / "prepared")  # the prepared stream keeps text beside x
    again = load_stream(tmp_path / "prepared")
    assert again.is_text and list(again.test.text) == list(stream.test.text)
    np.testing.assert_array_equal(again.train.X, stream.train.X)


def test_a_rerun_and_an_update_embed_only_new_rows(text_dir, cache_dir, tmp_path):
    cfg = StreamConfig(source="text", path=str(text_dir))
    first = EmbeddingCache(directory=cache_dir)
    stream = build_stream(cfg, first.embed)
    rerun = EmbeddingCache(directory=cache_dir)
    assert np.array_equal(build_stream(cfg, rerun.embed).train.X, stream.train.X)
    assert rerun.n_encoded_ == 0  # every text came from the cache
    new = ["A gentle breeze and clear skies today", "Light snow showers in the hills"]
    new += ["The striker missed an open goal", "Stir the sauce until it thickens"]
    frame = pl.DataFrame({"text": new, "y": [3, 3, 0, 1], "split": ["train", "test"] * 2})
    frame.write_parquet(tmp_path / "new.parquet")
    update = EmbeddingCache(directory=cache_dir)
    exp = read_experience(tmp_path / "new.parquet", 384, 4, text=TextInput(2000, update.embed))
    assert update.n_encoded_ == 4 and list(exp.train_text) == [new[0], new[2]]
    accepted = tmp_path / "experiences"
    path = write_experience(exp, accepted, 0, "new")
    assert "text" in pl.read_parquet(path).columns and "x" not in pl.read_parquet(path).columns
    prepare = EmbeddingCache(directory=cache_dir)  # prepare appends it: nothing to encode
    grown = append_experiences(stream, accepted, prepare.embed)
    assert prepare.n_encoded_ == 0 and grown.n_experiences == 3
    assert list(grown.train.text[-2:]) == [new[0], new[2]]


def test_intake_takes_documents_for_a_text_stream(text_dir, cache_dir, tmp_path):
    cache = EmbeddingCache(directory=cache_dir)
    stream = build_stream(StreamConfig(source="text", path=str(text_dir)), cache.embed)
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    docs = ["Rain later in the evening", "Sunshine all weekend", "Frost on the grass at dawn"]
    pl.DataFrame({"text": docs, "y": [3, 3, 3], "split": ["train", "train", "test"]}).write_parquet(
        incoming / "weather.parquet"
    )
    pl.DataFrame({"x": [[0.0] * 384], "y": [0]}).write_parquet(incoming / "numbers.parquet")
    result = intake(incoming, tmp_path / "exp", stream, settle=0, text=TextInput(2000, cache.embed))
    assert len(result.accepted) == 1 and "weather" in result.accepted[0]
    assert "field 'text'" in result.rejected["numbers.parquet"]


def _frame(**columns) -> pl.DataFrame:
    base = {"text": ["a goal", "a song", "a cake"], "y": [0, 2, 1], "experience": [0, 1, 0]}
    return pl.DataFrame({**base, **columns})


@pytest.mark.parametrize(
    "frame, expected",
    [
        (_frame(text=["a goal", None, "a cake"]), "row 1: missing text (null)"),
        (_frame(text=["a goal", "a song", "   "]), "row 2: empty text"),
        (_frame(text=["a goal", "a song", "x" * 2001]), "row 2: 2,001 characters"),
        (
            _frame(text=pl.Series([b"a goal", b"caf\xe9", b"a cake"], dtype=pl.Binary)),
            "row 1: not UTF-8",
        ),
        (_frame(y=[0, 7, 1]), "row 1: label 7 outside 0..3"),
        (_frame(text=[1, 2, 3]), "expected UTF-8 strings"),
    ],
    ids=["null", "empty", "too-long", "not-utf8", "unknown-label", "not-text"],
)
def test_bad_documents_are_one_line_naming_file_row_and_field(tmp_path, text_dir, frame, expected):
    bad = tmp_path / "bad"
    bad.mkdir()
    for name in ("test.parquet", "classes.json"):
        (bad / name).write_bytes((text_dir / name).read_bytes())
    frame.write_parquet(bad / "train.parquet")
    cfg = StreamConfig(source="text", path=str(bad))
    with pytest.raises(StreamError) as err:
        build_stream(cfg, lambda texts: pytest.fail("embedded before validating"))
    line = err.value.line()
    assert expected in line and str(bad / "train.parquet") in line and "\n" not in line
    field = "y" if "label" in expected else "text"
    assert f"field '{field}'" in line
