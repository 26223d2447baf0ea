"""The baselines' predictions file: written once, read by retrieval, refused when foreign."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from clflow.baselines.predictions import load_predictions, save_predictions
from clflow.config import StreamConfig
from clflow.errors import ClflowError
from clflow.streams import build_stream


@pytest.fixture(scope="module")
def stream():
    return build_stream(StreamConfig(source="digits", experiences=3, limit=300))


def proba(stream, seed):
    rng = np.random.default_rng(seed)
    p = rng.random((stream.n_experiences + 1, len(stream.test.y), len(stream.classes)))
    return (p / p.sum(-1, keepdims=True)).astype(np.float32)


def test_round_trip(stream, tmp_path):
    path = tmp_path / "predictions.npz"
    saved = {"replay": {0: proba(stream, 0), 2: proba(stream, 2)}, "joint": {0: proba(stream, 1)}}
    save_predictions(path, saved, stream)
    got = load_predictions(path, stream)
    assert set(got) == {"replay", "joint"} and set(got["replay"]) == {0, 2}
    np.testing.assert_array_equal(got["replay"][2], saved["replay"][2])
    assert load_predictions(tmp_path / "absent.npz", stream) == {}


def test_another_stream_or_garbage_is_one_line(stream, tmp_path):
    path = tmp_path / "predictions.npz"
    save_predictions(path, {"replay": {0: proba(stream, 0)}}, stream)
    other = replace(stream, test=stream.test.select(np.arange(len(stream.test.y)) > 0))
    with pytest.raises(ClflowError, match="another stream's test rows") as err:
        load_predictions(path, other)
    assert err.value.file == str(path) and "\n" not in str(err.value)
    path.write_bytes(b"not a zip")
    with pytest.raises(ClflowError, match="not a readable predictions file"):
        load_predictions(path, stream)
    np.savez(path, format=np.array("clflow-predictions/1"), test_digest=np.array("x"))
    with pytest.raises(ClflowError, match="another stream"):
        load_predictions(path, stream)
