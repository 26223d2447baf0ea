"""Team mode end to end, on the real PostgreSQL + `mlflow server` (clflow team up), a local DVC
remote and a real Prefect server: one clone runs the pipeline and pushes, a fresh clone pulls and
retrains nothing, reads the same registry, serves the champion, updates it under the registry
lease, and the two clones' workers share one Prefect server's deployments."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml
from conftest import (
    copy_project,
    drop_experience,
    file_hashes,
    mlflow_models_serve,
    post_json,
    run,
    running_prefect_server,
    stop,
    teammate,
)

from clflow.ops.remote import configure_remote
from clflow.ops.team import as_admin

pytestmark = pytest.mark.slow
GIT = ["git", "-c", "user.email=t@t", "-c", "user.name=t"]
BIN = Path(sys.executable).parent


def team_env(team, user: dict[str, str]) -> dict[str, str]:
    """What a teammate exports after `make team-up` and `clflow team user add` (nothing else)."""
    return {**os.environ, "MLFLOW_TRACKING_URI": team.tracking_uri, **user}


@pytest.fixture(scope="module")
def users(team_server) -> dict[str, dict[str, str]]:
    """Two maintainers, each with their own MLflow user: alice's clone and bob's."""
    return {name: teammate(team_server, name) for name in ("alice", "bob")}


def make_run(project: Path, team, user: dict[str, str], flow: str = "pipeline") -> str:
    """`make run` / `make update`: the flow's entry point, as the Makefile runs it."""
    return run(
        [sys.executable, f"flows/{flow}.py"], project, env=team_env(team, user), timeout=900
    ).stdout


def unbuilt(project: Path, *stages: str) -> Path:
    """`project` as if `stages` had never run: their dvc.lock entries and their outs gone."""
    lock_file = project / "dvc.lock"
    lock = yaml.safe_load(lock_file.read_text())
    for stage in stages:
        for out in lock["stages"].pop(stage).get("outs", []):
            target = project / out["path"]
            shutil.rmtree(target) if target.is_dir() else target.unlink()
    lock_file.write_text(yaml.safe_dump(lock, sort_keys=False))
    return project


@pytest.fixture(scope="module")
def alice(tmp_path_factory, built_project, team_server, users) -> Path:
    """The clone that ran the pipeline against the team server and pushed its outs; results
    committed as a teammate would.

    It starts from a copy of the session's built project in which `tame` and `register` have not
    run: `make run` runs those two against the team server (the runs these tests read: the
    champion, its lineage, the registry's decision, who made them), finds the other stages
    cached, and pushes every out. A whole pipeline run here cost ~5 min of the suite."""
    project = copy_project(built_project, tmp_path_factory.mktemp("alice") / "project")
    unbuilt(project, "tame", "register")
    configure_remote(project, str(team_server.remote))  # what make team-up writes
    make_run(project, team_server, users["alice"])
    run(["git", "add", "-A"], project)
    run([*GIT, "commit", "-qm", "results"], project)
    return project


@pytest.fixture(scope="module")
def bob(tmp_path_factory, alice, team_server, users) -> tuple[Path, dict, str]:
    """A fresh clone of alice's repository: `make pull`, then `make run`."""
    project = tmp_path_factory.mktemp("bob") / "project"
    run(["git", "clone", "-q", str(alice), str(project)], project.parent)
    pulled = run([str(BIN / "clflow"), "team", "pull"], project).stdout
    status = run([sys.executable, "-m", "dvc", "status"], project).stdout
    before = {"files": written(project), "runs": mlflow_runs(team_server)}
    out = make_run(project, team_server, users["bob"])
    return project, {"pulled": pulled, "status": status, "before": before}, out


def written(project: Path) -> dict[str, tuple[str, int]]:
    """(SHA-256, mtime) of every out: a stage that ran rewrites its files, even to equal bytes."""
    hashes = file_hashes(project, "models", "metrics", "plots", "data/stream", "dvc.lock")
    return {f: (h, (project / f).stat().st_mtime_ns) for f, h in hashes.items()}


def mlflow_runs(team) -> int:
    from mlflow import MlflowClient

    with as_admin(team):
        client = MlflowClient(team.tracking_uri)
        ids = [e.experiment_id for e in client.search_experiments()]
        return len(client.search_runs(ids, max_results=1000))


def test_pipeline_logs_to_the_team_server_and_pushes(alice, team_server, users):
    from mlflow import MlflowClient

    client = MlflowClient(team_server.tracking_uri)
    with as_admin(team_server):
        champion = client.get_model_version_by_alias("clflow-tame", "champion")
        run_info = client.get_run(champion.run_id).info
        leases = client.search_registered_models("name='clflow-tame.lease'")
    assert champion.tags["clflow.decision"] == "promoted"
    # who did it, named by the server's own login: the decision and "Created by"
    assert champion.tags["clflow.decided_by"] == "alice" == champion.user_id
    assert run_info.user_id == "alice"
    assert run_info.artifact_uri.startswith("mlflow-artifacts:")  # proxied: every teammate reads
    assert any(team_server.artifacts.rglob("MLmodel"))
    assert any((team_server.remote / "files" / "md5").iterdir())  # update.push: true
    assert not leases
    # what the MLflow UI of that server asks for to list the registry: a login first
    search = f"{team_server.tracking_uri}/ajax-api/2.0/mlflow/registered-models/search"
    with pytest.raises(urllib.error.HTTPError) as anonymous:
        urllib.request.urlopen(search, timeout=10)
    assert anonymous.value.code == 401
    login = base64.b64encode(b"alice:" + users["alice"]["MLFLOW_TRACKING_PASSWORD"].encode())
    request = urllib.request.Request(search, headers={"Authorization": f"Basic {login.decode()}"})
    with urllib.request.urlopen(request, timeout=10) as resp:
        assert "clflow-tame" in [m["name"] for m in json.load(resp)["registered_models"]]


def test_a_fresh_clone_pulls_and_retrains_nothing(bob, team_server):
    project, seen, out = bob
    assert "up to date" in seen["status"], seen["status"]
    assert written(project) == seen["before"]["files"]  # no stage wrote anything
    assert mlflow_runs(team_server) == seen["before"]["runs"]  # every stage cached: no new run
    assert (
        run([sys.executable, "-m", "dvc", "status"], project)
        .stdout.strip()
        .endswith("Data and pipelines are up to date.")
    )
    assert run(["git", "status", "--porcelain"], project).stdout == ""


def test_registry_lineage_and_serving_from_the_other_clone(bob, team_server, users, tmp_path):
    from clflow.streams import load_stream

    project = bob[0]
    env = team_env(team_server, users["bob"])
    listed = run([str(BIN / "clflow"), "registry", "list"], project, env=env).stdout
    assert "champion" in listed
    [chain] = json.loads(
        run([str(BIN / "clflow"), "lineage", "models:/clflow-tame@champion", "--json"],
            project, env=env).stdout
    )  # fmt: skip
    assert chain["version"] == "1" and chain["decision"] == "promoted"  # alice's, read by bob
    assert chain["stream"]["dvc_md5"] in (project / "dvc.lock").read_text()
    X = load_stream(project / "data" / "stream").test.X[:5]
    with mlflow_models_serve(team_server.tracking_uri, "models:/clflow-tame@champion",
                             tmp_path, **users["bob"]) as url:  # fmt: skip
        status, answer = post_json(url, json.dumps({"inputs": X.tolist()}))
    assert status == 200 and len(answer["predictions"]) == 5


def api(prefect: dict, path: str, body: dict | None = None):
    """A Prefect REST call; 503 (its SQLite database busy) is retried, as Prefect's client does."""
    url = prefect["PREFECT_API_URL"] + path
    data = json.dumps(body).encode() if body is not None else None
    for attempt in range(10):
        req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as err:
            if err.code != 503 or attempt == 9:
                raise
            time.sleep(1 + attempt)


def test_two_workers_on_two_clones_share_one_prefect_server(
    alice, bob, team_server, users, tmp_path
):
    # a server of its own: no other test's scheduled runs in its `clflow` pool
    with running_prefect_server(tmp_path) as prefect_server:
        two_workers(alice, bob[0], team_server, users, prefect_server, tmp_path)


def two_workers(
    alice: Path, bob: Path, team_server, users: dict, prefect_server: dict, tmp_path: Path
):
    clones = {"alice": alice, "bob": bob}
    env = {**prefect_server, "PREFECT_WORKER_QUERY_SECONDS": "2",
           "PREFECT_WORKER_PREFETCH_SECONDS": "0"}  # fmt: skip
    prefect = str(BIN / "prefect")
    run([prefect, "work-pool", "create", "clflow", "--type", "process"], alice, env=env)
    spec = yaml.safe_load((alice / "prefect.yaml").read_text())
    for deployment in spec["deployments"]:  # runs made here only, none by a clock or an event
        deployment.pop("schedules", None)
        deployment.pop("triggers", None)
    manual = tmp_path / "prefect.yaml"
    manual.write_text(yaml.safe_dump(spec, sort_keys=False))
    run([prefect, "--no-prompt", "deploy", "--all", "--prefect-file", str(manual)], alice, env=env)
    git_status = {n: run(["git", "status", "--porcelain"], c).stdout for n, c in clones.items()}
    for clone in clones.values():
        (clone / ".clflow" / "run.lock").unlink(missing_ok=True)
    workers = [
        subprocess.Popen(
            [prefect, "worker", "start", "--pool", "clflow", "--name", name],
            cwd=clone, env={**team_env(team_server, users[name]), **env,
                            "CLFLOW_WORKSPACE": str(clone)},
            stdout=open(tmp_path / f"{name}.log", "w"), stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        for name, clone in clones.items()
    ]  # fmt: skip
    try:
        deployment = api(prefect_server, "/deployments/name/clflow-pipeline/nightly")
        runs = [
            api(prefect_server, f"/deployments/{deployment['id']}/create_flow_run", {})["id"]
            for _ in range(2)
        ]
        deadline = time.monotonic() + 420
        while time.monotonic() < deadline:
            states = [api(prefect_server, f"/flow_runs/{r}")["state_type"] for r in runs]
            if all(s in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED") for s in states):
                break
            time.sleep(3)
        flow_runs = [api(prefect_server, f"/flow_runs/{r}") for r in runs]
        pool = api(prefect_server, "/work_pools/clflow/workers/filter", {})
    finally:
        for proc in workers:
            stop(proc)
    logs = {n: (tmp_path / f"{n}.log").read_text()[-3000:] for n in clones}
    assert [f["state_type"] for f in flow_runs] == ["COMPLETED"] * 2, logs
    assert {w["name"] for w in pool} == set(clones)  # both workers polled the one server
    spans = sorted((f["start_time"], f["end_time"]) for f in flow_runs)
    for (_, end), (start, _) in zip(spans, spans[1:]):  # concurrency_limit 1: never two at once
        assert end <= start, spans
    # each run took its worker's clone (the pull step's CLFLOW_WORKSPACE)
    ran_in = {n for n, c in clones.items() if (c / ".clflow" / "run.lock").exists()}
    assert ran_in and ran_in <= set(clones)
    for name, clone in clones.items():  # cached runs: nothing changed in either clone
        assert run(["git", "status", "--porcelain"], clone).stdout == git_status[name]


# last: the update leaves bob's other stages to rerun (their stream changed)
def test_continual_update_in_the_other_clone_registers_under_the_lease(bob, team_server, users):
    from mlflow import MlflowClient

    project = bob[0]
    pushed = set(team_server.remote.rglob("*"))
    drop_experience(project, "rotated.parquet")
    make_run(project, team_server, users["bob"], flow="continual")
    assert set(team_server.remote.rglob("*")) > pushed  # the update pushed its new outs
    client = MlflowClient(team_server.tracking_uri)
    with as_admin(team_server):
        versions = client.search_model_versions("name='clflow-tame'")
        newest = client.get_model_version(
            "clflow-tame", max(versions, key=lambda v: int(v.version)).version
        )
        leases = client.search_registered_models("name='clflow-tame.lease'")
    assert int(newest.version) >= 2
    assert newest.tags["clflow.decision"] in ("promoted", "rejected")
    assert newest.tags["clflow.registered_by"] == "bob" == newest.user_id
    assert not leases
