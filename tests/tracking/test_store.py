"""Where MLflow stores runs and how a person reaches them in the UI (`tracking/store.py`)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest

from clflow.tracking.store import TRAINING_VIEW, ui_links

BIN = Path(sys.executable).parent


def test_the_ui_bundle_reads_the_view_from_the_link():
    """The links rely on the UI taking `workflowType` from the URL over the browser's stored
    toggle: an MLflow upgrade that drops it fails here, not in a newcomer's browser."""
    bundle = Path(mlflow.__file__).parent / "server" / "js" / "build" / "static" / "js"
    text = "".join(p.read_text(errors="ignore") for p in bundle.glob("main.*.js"))
    assert '"mlflow.workflowType"' in text and 'MACHINE_LEARNING="machine_learning"' in text
    assert re.search(r'\.get\("workflowType"\)', text)
    assert TRAINING_VIEW == "workflowType=machine_learning"


@pytest.mark.slow
def test_links_name_the_projects_experiment_and_model(built_project, monkeypatch):
    env = {**os.environ, "CLFLOW_MLFLOW_UI": "http://127.0.0.1:5555/"}
    out = subprocess.run(
        [str(BIN / "clflow"), "links"], cwd=built_project, env=env, capture_output=True,
        text=True, check=True,
    ).stdout  # fmt: skip
    client = mlflow.tracking.MlflowClient(f"sqlite:///{built_project / 'mlflow.db'}")
    exp = client.get_experiment_by_name("clflow").experiment_id
    runs = f"http://127.0.0.1:5555/#/experiments/{exp}/runs?workflowType=machine_learning"
    assert out.splitlines() == [
        f"MLflow training runs: {runs}",
        "MLflow model clflow-tame: "
        "http://127.0.0.1:5555/#/models/clflow-tame?workflowType=machine_learning",
    ]
    monkeypatch.delenv("CLFLOW_MLFLOW_UI", raising=False)
    assert ui_links(None, "m") == {
        "models": "http://127.0.0.1:5000/#/models/m?workflowType=machine_learning"
    }
