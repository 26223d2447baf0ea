"""The loop closed, for real: a served champion records its traffic, `drift-watch` finds drift in
it, the Prefect event starts `continual-update` through prefect.yaml's trigger, and the labelled
rows become a new registered version. Asserted through Prefect's and MLflow's REST APIs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import (
    copy_project,
    delivered,
    free_port,
    post_json,
    run,
    stop,
    until,
    wait_http,
)

from clflow.scaffold import update_params

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent
WINDOW = 100


def api(env: dict, path: str, body: dict | None = None):
    url = env["PREFECT_API_URL"] + path
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())


def drift_events(env: dict) -> list[dict]:
    found = api(env, "/events/filter", {"filter": {"event": {"name": ["clflow.drift.detected"]}}})
    return found["events"]


def update_runs(env: dict) -> list[dict]:
    return api(env, "/flow_runs/filter", {"deployments": {"name": {"any_": ["continual-update"]}}})


def automation_fired(env: dict, automation_id: str) -> list:
    query = {"event": {"name": ["prefect.automation.triggered"]},
             "resource": {"id": [f"prefect.automation.{automation_id}"]}}  # fmt: skip
    return api(env, "/events/filter", {"filter": query})["events"]


def finished(env: dict, run_id: str) -> str | None:
    state = api(env, f"/flow_runs/{run_id}")["state_type"]
    return state if state in {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"} else None


def watch(project: Path, env: dict) -> dict:
    """One drift-watch run through its deployment (created through the REST API, as the UI's Run
    button does), to Completed; where the window it scored ended."""
    (deployment,) = api(env, "/deployments/filter", {"deployments": {"name": {"any_": [
        "drift-watch"]}}})  # fmt: skip
    run_id = api(env, f"/deployments/{deployment['id']}/create_flow_run", {})["id"]
    assert until(lambda: finished(env, run_id), 180, 0.5) == "COMPLETED"
    return json.loads((project / ".clflow" / "drift-watch.json").read_text())


def served_rows(project: Path) -> int:
    import polars as pl

    found = (project / "data" / "served").glob("segment-*.parquet")
    return sum(pl.read_parquet(p).height for p in found)


def send(url: str, X: np.ndarray) -> None:
    for chunk in np.array_split(X, 4):
        status, body = post_json(url, json.dumps({"inputs": chunk.tolist()}))
        assert status == 200, body


def test_drift_on_served_traffic_starts_the_update(updated_project, prefect_server, tmp_path):
    from clflow.streams import load_stream
    from clflow.streams.demo import example_experience
    from clflow.tracking.registry import Registry

    project = copy_project(updated_project[0], tmp_path / "project")
    update_params(project, {"update": {"compare_retrain": False}})
    spec = yaml.safe_load((project / "prefect.yaml").read_text())
    for d in spec["deployments"]:  # the test starts drift-watch itself: no schedule races it
        d.pop("schedules", None)
        if d["name"] == "drift-watch":
            d["parameters"]["window"] = WINDOW
    (project / "prefect.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    uri = f"sqlite:///{project / 'mlflow.db'}"
    registry = Registry("clflow-tame", uri)
    champion = registry.version("champion")
    seen = int(champion.tags["clflow.experiences"])
    stream = load_stream(project / "data" / "stream")
    rng = np.random.default_rng(0)
    known = stream.test.X[stream.test.experience < seen]
    unshifted = known[rng.choice(len(known), WINDOW, replace=False)]
    labelled = example_experience(stream, permute=True, seed=3, limit=300)  # a new domain
    shifted = np.stack(labelled["x"].to_list())[:WINDOW]
    versions = len(registry.table())

    env = {**prefect_server, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    env["PREFECT_RUNNER_POLL_FREQUENCY"] = "2"  # the runner picks up a run in 2 s, not 10
    port = free_port()
    logs = [open(tmp_path / name, "w") for name in ("model.log", "flows.log")]
    model = subprocess.Popen(
        [str(BIN / "clflow"), "serve", "--project", str(project), "--port", str(port),
         "--segment-seconds", "1"],
        env=env, stdout=logs[0], stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    flows = subprocess.Popen(
        [sys.executable, "flows/serve.py"], cwd=project, env=env, stdout=logs[1],
        stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}/invocations"
    try:
        wait_http(f"http://127.0.0.1:{port}/ping", 180, model)

        def deployed():
            names = {d["name"] for d in api(env, "/deployments/filter", {})}
            automations = api(env, "/automations/filter", {})
            return {"drift-watch", "continual-update"} <= names and automations

        (automation,) = until(deployed, 120, 2)
        assert automation["name"] == "clflow-drift-starts-continual-update"
        assert automation["trigger"]["expect"] == ["clflow.drift.detected"]

        # unshifted traffic: scored, no drift, no event
        send(url, unshifted)
        status, body = post_json(url, json.dumps({"inputs": [[True] * known.shape[1]]}))
        assert status == 400  # refused: not traffic
        until(lambda: served_rows(project) == WINDOW, 30, 0.5)
        first = watch(project, env)
        cli = run(
            [str(BIN / "clflow"), "drift", "--json", "--window", str(WINDOW)], project, env=env
        )
        report = json.loads(cli.stdout)
        assert report["window"] == WINDOW and report["drift"] is False, report
        assert report["model_version"] == str(champion.version)
        assert report["end"] == first["end"]  # drift-watch scored the same window
        assert not list((project / "data" / "to-label").glob("*.parquet"))

        # shifted traffic: a new domain
        send(url, shifted)
        until(lambda: served_rows(project) == 2 * WINDOW, 30, 0.5)
        watch(project, env)
        (event,) = until(lambda: drift_events(env), 60)
        assert event["resource"]["prefect.resource.id"] == "clflow.model.clflow-tame"
        assert event["payload"]["drift"] is True and event["payload"]["window"] == WINDOW
        assert event["payload"]["new_task_share"] > 0.5
        (to_label,) = (project / "data" / "to-label").glob("*.parquet")

        # the trigger started continual-update, which waits for the labelled rows
        (triggered,) = until(lambda: update_runs(env), 60)
        assert triggered["created_by"]["type"] == "AUTOMATION"
        assert triggered["created_by"]["id"] == automation["id"]
        # the automation's own event, as the UI's Event Feed shows it; the server persists events
        # in batches, so it may land after the run it started
        until(lambda: automation_fired(env, automation["id"]), 30)
        assert triggered["parameters"]["wait_for_files"] == 3600
        until(lambda: api(env, f"/flow_runs/{triggered['id']}")["state_type"] == "RUNNING", 120)
        labelled.write_parquet(project / "data" / "incoming" / "labelled.parquet")
        delivered(project / "data" / "incoming" / "labelled.parquet")

        state = until(lambda: finished(env, triggered["id"]), 420, 2)
        assert state == "COMPLETED", (tmp_path / "flows.log").read_text()
    finally:
        for proc in (model, flows):
            stop(proc)
        for log in logs:
            log.close()
    assert to_label.exists()
    rows = registry.table()
    assert len(rows) == versions + 1  # a new version, promoted or not, with its reason
    newest = registry.get(len(rows))
    assert newest.tags["clflow.decision"] in {"promoted", "rejected"}
    assert newest.tags["clflow.reason"]
    assert int(newest.tags["clflow.experiences"]) == stream.n_experiences + 1
