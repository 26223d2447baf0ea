"""A TAME checkpoint is continued only by the code that wrote it."""

from __future__ import annotations

import numpy as np
import pytest

from clflow.checkpoint import CheckpointError
from clflow.config import StreamConfig, TrainConfig
from clflow.learners import learner_from_config
from clflow.streams import build_stream
from clflow.tame import TameLearner, incremental
from clflow.tame.persist import restore


@pytest.fixture(scope="module")
def stream():
    return build_stream(StreamConfig(source="digits", experiences=2, limit=300))


def test_fingerprint_covers_the_code_behind_experts_and_selector(stream, monkeypatch, tmp_path):
    names = {p.name for p in incremental.MODEL_CODE}
    assert {
        "learner.py",
        "selector.py",
        "detector.py",
        "learners.py",
        "models.py",
        "plugins.py",
        "normalize.py",
        "pruning.py",
    } <= names
    before = incremental.fingerprint({"a": 1}, stream)
    edited = tmp_path / "models.py"
    edited.write_text(
        next(p for p in incremental.MODEL_CODE if p.name == "models.py").read_text() + "\n# edit\n"
    )
    monkeypatch.setattr(
        incremental,
        "MODEL_CODE",
        [edited if p.name == "models.py" else p for p in incremental.MODEL_CODE],
    )
    assert incremental.fingerprint({"a": 1}, stream) != before


def test_a_state_that_does_not_fit_is_one_line(stream, tmp_path):
    small = TameLearner(
        learner_from_config(stream, TrainConfig(hidden=8), seed=0), selector_epochs=1
    )
    small.partial_fit(stream.train.X[:32], stream.train.y[:32])
    big = TameLearner(
        learner_from_config(stream, TrainConfig(hidden=16), seed=0), selector_epochs=1
    )
    with pytest.raises(
        CheckpointError, match=r"^ck.pt: field 'state': does not fit this code \(RuntimeError\)"
    ):
        restore({"state": small.get_state()}, "ck.pt", big)
    assert np.array_equal(
        restore({"state": small.get_state()}, "ck.pt", small).predict(stream.test.X[:5]),
        small.predict(stream.test.X[:5]),
    )
