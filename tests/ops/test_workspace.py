"""The deployments' pull step: the worker's clone, chosen when the run starts."""

from __future__ import annotations

import os

import pytest

from clflow.errors import ClflowError
from clflow.ops.workspace import ENV, set_workspace


@pytest.fixture
def restore_cwd():
    here = os.getcwd()
    yield
    os.chdir(here)


def test_the_worker_clone_wins_over_the_start_directory(tmp_path, monkeypatch, restore_cwd):
    clone, other = tmp_path / "clone", tmp_path / "other"
    for d in (clone, other):
        d.mkdir()
        (d / "dvc.yaml").write_text("stages: {}\n")
    monkeypatch.setenv("PWD", str(other))
    monkeypatch.setenv(ENV, str(clone))
    assert set_workspace() == {"directory": str(clone)} and os.getcwd() == str(clone)
    monkeypatch.delenv(ENV)
    assert set_workspace()["directory"] == str(other)  # a worker started by hand in its clone


def test_not_a_project_is_one_line(tmp_path, monkeypatch, restore_cwd):
    monkeypatch.setenv(ENV, str(tmp_path))
    with pytest.raises(ClflowError) as err:
        set_workspace()
    assert "make worker" in err.value.line() and str(tmp_path) in err.value.line()
    assert os.getcwd() != str(tmp_path)
