"""`mlflow models serve` of the registry's champion answers like in-process prediction."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import free_port, post_json, stop, wait_http

pytestmark = pytest.mark.slow


def test_served_champion_equals_in_process_predict(updated_project, tmp_path):
    import mlflow.pyfunc

    from clflow.streams import load_stream
    from clflow.tracking.store import use_store

    project, _, _ = updated_project
    uri = f"sqlite:///{project / 'mlflow.db'}"
    X = load_stream(project / "data" / "stream").test.X[::7][:40]
    use_store(uri)
    local = mlflow.pyfunc.load_model("models:/clflow-tame@champion").predict(X)

    port = free_port()
    bin_dir = str(Path(sys.executable).parent)  # `--env-manager local` execs uvicorn from here
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": uri,
        "PATH": bin_dir + os.pathsep + os.environ["PATH"],
    }
    log = open(tmp_path / "serve.log", "w")
    proc = subprocess.Popen(
        [
            f"{bin_dir}/mlflow",
            "models",
            "serve",
            "-m",
            "models:/clflow-tame@champion",
            "--env-manager",
            "local",
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
        ],
        env=env,
        cwd=tmp_path,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}/invocations"
    try:
        wait_http(f"http://127.0.0.1:{port}/ping", 180, proc)
        served = post_json(url, json.dumps({"inputs": X.tolist()}))[1]["predictions"]
        # bad rows get HTTP 400 with a line naming the row and the feature; the server keeps serving
        row = X[0].tolist()
        row[5] = "BAD"
        body = json.dumps({"inputs": [X[0].tolist(), row]})
        answers = {
            bad: post_json(url, body.replace('"BAD"', bad))
            for bad in ("NaN", "null", '"inf"', "Infinity")
        }
        short = post_json(url, json.dumps({"inputs": [X[0][:10].tolist()]}))
        empty = post_json(url, json.dumps({"inputs": []}))
        again = post_json(url, json.dumps({"inputs": X[:3].tolist()}))
    finally:
        stop(proc)
        log.close()
    for bad, (status, body) in answers.items():
        assert status == 400, (bad, body)
        assert "row 1, feature 5:" in body["message"], (bad, body)
        assert "not a finite number" in body["message"], (bad, body)
    assert short[0] == 400 and "64" in short[1]["message"]
    assert empty[0] == 400
    assert (
        again[0] == 200
        and [r["label"] for r in again[1]["predictions"]] == local["label"].tolist()[:3]
    )
    assert [r["label"] for r in served] == local["label"].tolist()
    assert [r["expert"] for r in served] == local["expert"].tolist()
    assert [r["class_name"] for r in served] == local["class_name"].tolist()
