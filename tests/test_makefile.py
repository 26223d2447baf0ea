"""`make ui` for real: both UIs on the ports they are given, light on a small machine."""

from __future__ import annotations

import json
import os
import subprocess
import urllib.request
from pathlib import Path

import pytest
from conftest import ROOT, copy_project, free_port, run, stop, wait_http


def session_processes(sid: int) -> list[tuple[str, int]]:
    """(command line, resident KiB) of every live process in session `sid`."""
    out = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if os.getsid(int(proc.name)) != sid:
                continue
            cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
            rss = next(
                int(line.split()[1])
                for line in (proc / "status").read_text().splitlines()
                if line.startswith("VmRSS:")
            )
        except (OSError, StopIteration):
            continue  # gone, or a zombie
        out.append((cmd, rss))
    return out


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return json.load(resp)


# `make ui` in a project copy with this checkout's environments: its `install` prerequisites are
# the checkout's .venv and .venv-flower (else make builds a Flower venv in the copy: ~15 s a test)
MAKE_UI = [
    "make", "-s", "-f", str(ROOT / "Makefile"), "ui", f"VENV={ROOT / '.venv'}",
    f"FLOWER_VENV={ROOT / '.venv-flower'}",
    f"FLOWER_APP={ROOT / 'src/clflow/federated/flower/app/pyproject.toml'}",
]  # fmt: skip


@pytest.mark.slow
def test_make_ui_serves_both_uis_on_any_port_and_stays_light(tmp_path, built_project):
    """`make ui` in a copy of a built project: both UIs answer on the ports given, MLflow's
    REST API shows the champion with its data version and flow run, and `clflow lineage`
    through that server gives the chain."""
    # the project's venv; an old pyproject.toml keeps the `install` prerequisite satisfied
    project = copy_project(built_project, tmp_path / "project")
    (project / "pyproject.toml").write_text("")
    os.utime(project / "pyproject.toml", (0, 0))
    prefect_port, mlflow_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    proc = subprocess.Popen(
        [
            *MAKE_UI,
            f"PREFECT_PORT={prefect_port}",
            f"MLFLOW_PORT={mlflow_port}",
        ],
        cwd=project,
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_http(f"http://127.0.0.1:{prefect_port}/api/health", 180, proc)
        wait_http(f"http://127.0.0.1:{mlflow_port}/health", 120, proc)
        # the UI calls the API it was served with, not 4200
        ui = get_json(f"http://127.0.0.1:{prefect_port}/ui-settings")
        assert ui["api_url"] == f"http://127.0.0.1:{prefect_port}/api"
        # MLflow's REST API answers from the project's store: a training experiment, the
        # champion, its run with the data version and the Prefect flow run
        api = f"http://127.0.0.1:{mlflow_port}/api/2.0/mlflow"
        found = get_json(f"{api}/experiments/get-by-name?experiment_name=clflow")["experiment"]
        tags = {t["key"]: t["value"] for t in found["tags"]}
        assert tags["mlflow.experimentKind"] == "custom_model_development"
        champ = get_json(f"{api}/registered-models/alias?name=clflow-tame&alias=champion")
        version = champ["model_version"]
        assert "| experience | challenger | champion |" in version["description"]
        got = get_json(f"{api}/runs/get?run_id={version['run_id']}")["run"]
        [data] = got["inputs"]["dataset_inputs"]
        run_tags = {t["key"]: t["value"] for t in got["data"]["tags"]}
        assert data["dataset"]["digest"] == run_tags["clflow.data.stream"]
        flow_run = run_tags["clflow.prefect_flow_run_id"]
        # the lineage chain, read through the MLflow server
        chain = run(
            [
                str(ROOT / ".venv/bin/clflow"),
                "lineage",
                "models:/clflow-tame@champion",
                "--uri",
                f"http://127.0.0.1:{mlflow_port}",
            ],
            project,
        ).stdout
        assert f"models:/clflow-tame/{version['version']} @" in chain
        assert flow_run in chain and data["dataset"]["digest"] in chain
        assert (project / ".prefect").is_dir()
        procs = session_processes(proc.pid)
        mlflow = [c for c, _ in procs if "mlflow" in c or "uvicorn" in c]
        assert not [c for c, _ in procs if "huey" in c], "the job runner was started"
        assert len(mlflow) <= 3, mlflow  # the CLI, its server, one worker (was 12)
        print(
            f"make ui: {len(procs)} processes, {sum(r for _, r in procs) / 1024:.0f} MiB resident"
        )
    finally:
        stop(proc)


@pytest.mark.slow
def test_make_ui_with_a_port_in_use_stops_with_one_line(tmp_path, built_project):
    import socket

    project = copy_project(built_project, tmp_path / "project")
    (project / "pyproject.toml").write_text("")
    os.utime(project / "pyproject.toml", (0, 0))
    mlflow_port = free_port()
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        busy = squatter.getsockname()[1]
        proc = subprocess.run(
            [
                *MAKE_UI, f"PREFECT_PORT={busy}", f"MLFLOW_PORT={mlflow_port}",
            ],
            cwd=project, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert errors == [
        f"error: 127.0.0.1: port PREFECT_PORT={busy} is in use: stop what listens there, or "
        "pick another port (make ui PREFECT_PORT=... MLFLOW_PORT=...)"
    ], proc.stderr
    with socket.socket() as probe:  # no server was left on the other port
        probe.bind(("127.0.0.1", mlflow_port))


def test_team_targets_pass_their_settings_on():
    """`make team-up | pull | worker` as make would run them (-n: printed, not run)."""

    def dry(*args: str) -> str:
        return run(["make", "-n", *args], ROOT).stdout

    up = dry("team-up", "TEAM_DIR=/srv/team", "TEAM_PG_PORT=6001", "TEAM_MLFLOW_PORT=6002",
             "TEAM_REMOTE=s3://bucket/clflow", "TEAM_ENDPOINT=http://127.0.0.1:9000")  # fmt: skip
    assert (
        "clflow team up --dir /srv/team --pg-port 6001 --mlflow-port 6002 "
        "--remote s3://bucket/clflow --endpoint-url http://127.0.0.1:9000"
        in " ".join(up.replace("\\\n", " ").split())
    )
    assert "clflow team down --dir" in dry("team-down")
    assert "clflow team pull" in dry("pull") and "--remote" not in dry("pull")
    worker = dry("worker")
    assert "deploy --all" in worker
    assert f"CLFLOW_WORKSPACE={ROOT} exec .venv/bin/prefect worker start --pool clflow" in worker
