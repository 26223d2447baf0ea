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


@pytest.mark.slow
def test_editing_a_parameter_description_keeps_the_fingerprint(tmp_path):
    """`clflow.config` is not model code: a reworded description must not retrain TAME, while
    an edit to the learner must."""
    import shutil
    import subprocess
    import sys

    from conftest import ROOT

    code = (
        "from clflow.config import StreamConfig; from clflow.streams import build_stream; "
        "from clflow.tame.incremental import fingerprint; "
        "print(fingerprint({}, build_stream(StreamConfig(source='digits', limit=300))))"
    )

    def fingerprint_with(edit: str | None) -> str:
        src = tmp_path / "src"
        shutil.rmtree(src, ignore_errors=True)
        shutil.copytree(ROOT / "src", src, ignore=shutil.ignore_patterns("__pycache__"))
        if edit == "description":
            config = src / "clflow" / "config.py"
            text = config.read_text()
            assert 'description="class groups' in text
            config.write_text(text.replace('description="class groups', 'description="groups'))
        elif edit == "learner":
            learner = src / "clflow" / "tame" / "learner.py"
            learner.write_text(learner.read_text() + "\n# an edit\n")
        out = subprocess.run(
            [sys.executable, "-c", code],
            env={"PYTHONPATH": str(src), "PATH": ""},
            capture_output=True,
            text=True,
            check=True,
        )
        return out.stdout.strip()

    before = fingerprint_with(None)
    assert fingerprint_with("description") == before
    assert fingerprint_with("learner") != before
