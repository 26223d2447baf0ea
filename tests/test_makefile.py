"""`make ui` for real: both UIs on the ports they are given, light on a small machine."""

from __future__ import annotations

import json
import os
import subprocess
import urllib.request
from pathlib import Path

import pytest
from conftest import ROOT, free_port, stop, wait_http


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


@pytest.mark.slow
def test_make_ui_serves_both_uis_on_any_port_and_stays_light(tmp_path):
    # run from a scratch directory (its own .prefect and mlflow.db), with the project's venv; an
    # old pyproject.toml keeps the `install` prerequisite satisfied
    (tmp_path / "pyproject.toml").write_text("")
    os.utime(tmp_path / "pyproject.toml", (0, 0))
    prefect_port, mlflow_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    proc = subprocess.Popen(
        [
            "make",
            "-s",
            "-f",
            str(ROOT / "Makefile"),
            "ui",
            f"VENV={ROOT / '.venv'}",
            f"PREFECT_PORT={prefect_port}",
            f"MLFLOW_PORT={mlflow_port}",
        ],
        cwd=tmp_path,
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
        # MLflow's REST API answers from the scratch store
        found = get_json(
            f"http://127.0.0.1:{mlflow_port}/api/2.0/mlflow/experiments/search?max_results=10"
        )
        assert [e["name"] for e in found["experiments"]] == ["Default"]
        assert (tmp_path / "mlflow.db").exists() and (tmp_path / ".prefect").is_dir()
        procs = session_processes(proc.pid)
        mlflow = [c for c, _ in procs if "mlflow" in c or "uvicorn" in c]
        assert not [c for c, _ in procs if "huey" in c], "the job runner was started"
        assert len(mlflow) <= 3, mlflow  # the CLI, its server, one worker (was 12)
        print(
            f"make ui: {len(procs)} processes, {sum(r for _, r in procs) / 1024:.0f} MiB resident"
        )
    finally:
        stop(proc)
