"""`mlflow models serve` of the registry's champion answers like in-process prediction."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from conftest import free_port, stop, wait_http

pytestmark = pytest.mark.slow


def test_served_champion_equals_in_process_predict(updated_project, tmp_path):
    import mlflow.pyfunc

    from clflow.streams import load_stream
    from clflow.tracking import use_store

    project, _, _ = updated_project
    uri = f"sqlite:///{project / 'mlflow.db'}"
    X = load_stream(project / "data" / "stream").test.X[::7][:40]
    use_store(uri)
    local = mlflow.pyfunc.load_model("models:/clflow-tame@champion").predict(X)

    port = free_port()
    bin_dir = str(Path(sys.executable).parent)  # `--env-manager local` execs uvicorn from here
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "PATH": bin_dir + os.pathsep + os.environ["PATH"]}
    log = open(tmp_path / "serve.log", "w")
    proc = subprocess.Popen([f"{bin_dir}/mlflow", "models", "serve", "-m", "models:/clflow-tame@champion",
                             "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)], env=env, cwd=tmp_path,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_http(f"http://127.0.0.1:{port}/ping", 180, proc)
        req = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", data=json.dumps({"inputs": X.tolist()}).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=60) as resp:
            served = json.loads(resp.read())["predictions"]
    finally:
        stop(proc)
        log.close()
    assert [r["label"] for r in served] == local["label"].tolist()
    assert [r["expert"] for r in served] == local["expert"].tolist()
    assert [r["class_name"] for r in served] == local["class_name"].tolist()
