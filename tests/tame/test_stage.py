"""The `tame` DVC stage: incremental continuation from its persisted checkpoint."""

from __future__ import annotations

import hashlib
import json
import sys

import pytest
from conftest import copy_project, run, update_params

pytestmark = pytest.mark.slow


def repro(project, *args, check=True):
    return run([sys.executable, "-m", "dvc", "repro", *args], project, check=check)


def metrics(project):
    return json.loads((project / "metrics" / "tame.json").read_text())


def test_appended_experience_continues_from_the_checkpoint(tmp_path, built_project):
    # a copy of the built project (its class targets are reused), on a shorter stream
    project = copy_project(built_project, tmp_path / "p")
    update_params(project, {"stream": {"tasks": [0, 1, 2]}, "train": {"epochs": 3}})
    repro(project, "tame")
    assert metrics(project)["resumed_from_experience"] == 0
    ckpt = project / "models" / "tame" / "seed_0.pt"
    assert ckpt.exists()

    update_params(project, {"stream": {"tasks": [0, 1, 2, 3]}})  # the stream gains one experience
    proc = repro(project, "tame")
    out = proc.stdout + proc.stderr
    m = metrics(project)
    assert m["resumed_from_experience"] == 3, out
    assert m["n_experts"] == 4 and m["detection_f1"] == 1.0

    update_params(project, {"tame": {"buffer_size": 60}})  # a changed param retrains from scratch
    repro(project, "tame")
    assert metrics(project)["resumed_from_experience"] == 0


def test_corrupt_checkpoint_stops_with_one_line_and_keeps_it(tmp_path, built_project):
    project = copy_project(built_project, tmp_path / "p")
    ckpt = project / "models" / "tame" / "seed_0.pt"
    ckpt.write_bytes(ckpt.read_bytes()[:1000])
    before = hashlib.sha256(ckpt.read_bytes()).hexdigest()
    update_params(project, {"stream": {"tasks": [0, 1, 2, 3, 4, 0]}})  # one more experience
    proc = repro(project, "tame", check=False)
    assert proc.returncode != 0
    assert (
        f"error: {ckpt.relative_to(project)}: truncated or corrupt checkpoint"
        in proc.stderr + proc.stdout
    )
    assert (
        hashlib.sha256(ckpt.read_bytes()).hexdigest() == before
    )  # persisted, not deleted or rewritten
