"""Deployments from prefect.yaml on a real Prefect server on 127.0.0.1, run to Completed through the
API."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import make_project, run, stop

pytestmark = pytest.mark.slow
PREFECT = str(Path(sys.executable).parent / "prefect")


def deployments(api: str) -> dict[str, dict]:
    req = urllib.request.Request(
        f"{api}/deployments/filter", data=b"{}", headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        return {d["name"]: d for d in json.loads(resp.read())}


def test_served_deployment_runs_to_completed(tmp_path, prefect_server):
    project = make_project(tmp_path / "p")
    log = open(tmp_path / "serve.log", "w")
    server = subprocess.Popen(
        [sys.executable, "flows/serve.py"],
        cwd=project,
        env=prefect_server,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while True:  # wait until serve.py registered both deployments
            listed = deployments(prefect_server["PREFECT_API_URL"])
            if {"nightly", "continual-update"} <= set(listed):
                break
            assert server.poll() is None, (tmp_path / "serve.log").read_text()
            assert time.monotonic() < deadline, listed
            time.sleep(2)
        nightly = listed["nightly"]
        assert nightly["schedules"][0]["schedule"]["cron"] == "0 2 * * *"
        assert nightly["global_concurrency_limit"]["limit"] == 1
        assert listed["continual-update"]["schedules"][0]["schedule"]["interval"] == 900
        out = run(
            [
                PREFECT,
                "deployment",
                "run",
                "clflow-pipeline/nightly",
                "--param",
                'stages=["prepare"]',
                "--watch",
                "--watch-timeout",
                "300",
            ],
            project,
            env=prefect_server,
        )
        assert "Completed" in out.stdout + out.stderr
    finally:
        stop(server)
        log.close()
    # it ran the real stage through DVC in the project
    assert (project / "data" / "stream" / "train.parquet").exists()
    assert "prepare:" in (project / "dvc.lock").read_text()
    # the same prefect.yaml deploys to a process work pool (what `prefect worker start -p clflow`
    # runs)
    run(
        [PREFECT, "work-pool", "create", "clflow", "--type", "process"], project, env=prefect_server
    )
    run(
        [PREFECT, "--no-prompt", "deploy", "--all"],
        project,
        env=prefect_server,
    )
    pooled = deployments(prefect_server["PREFECT_API_URL"])
    for name in ("nightly", "continual-update"):
        assert pooled[name]["work_pool_name"] == "clflow"
        # the worker's clone, chosen when a run starts (not the deploying directory)
        assert pooled[name]["pull_steps"] == [{"clflow.ops.workspace.set_workspace": {}}]


def test_serve_without_a_server_names_the_api_url(tmp_path):
    from conftest import free_port

    project = make_project(tmp_path / "p")
    url = f"http://127.0.0.1:{free_port()}/api"
    proc = run(
        [sys.executable, "flows/serve.py", "--api-timeout", "2"],
        project,
        check=False,
        env={**__import__("os").environ, "PREFECT_API_URL": url},
    )
    assert proc.returncode == 2
    assert (
        proc.stderr.strip()
        .splitlines()[-1]
        .startswith(f"error: {url}/health: the Prefect API did not answer")
    )
