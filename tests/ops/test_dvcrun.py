"""DVC under a flow: bounded memory, and params.yaml checked before DVC reads it."""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import make_project, run

from clflow.ops.dvcrun import MEMORY_ENV, dvc, limit_memory, memory_limit


def test_a_started_process_gets_the_data_limit(monkeypatch):
    monkeypatch.setenv(MEMORY_ENV, str(512 << 20))
    proc = subprocess.Popen(["sleep", "30"])
    try:
        limit_memory(proc.pid)
        limits = open(f"/proc/{proc.pid}/limits").read()
    finally:
        proc.kill()
        proc.wait()
    line = next(x for x in limits.splitlines() if x.startswith("Max data size"))
    assert line.split()[3:5] == [str(512 << 20)] * 2
    monkeypatch.delenv(MEMORY_ENV)
    assert memory_limit() > 1 << 30  # by default three quarters of the machine


@pytest.mark.slow
def test_a_stage_past_the_memory_limit_fails_instead_of_growing(tmp_path, monkeypatch):
    """The cap reaches what DVC runs: a stage that allocates 300 MB under a 150 MB cap fails."""
    run(["git", "init", "-q"], tmp_path)
    run([sys.executable, "-m", "dvc", "init", "-q"], tmp_path)
    grow = "python -c 'bytearray(300 << 20)'"
    (tmp_path / "dvc.yaml").write_text(f"stages:\n  grow:\n    cmd: {grow}\n")
    assert dvc(["repro", "grow"], tmp_path).returncode == 0  # the default cap: room enough
    monkeypatch.setenv(MEMORY_ENV, str(150 << 20))
    capped = dvc(["repro", "-f", "grow"], tmp_path)
    assert capped.returncode != 0 and "MemoryError" in capped.stdout + capped.stderr


@pytest.mark.slow
def test_a_yaml_alias_bomb_stops_the_flow_before_dvc_reads_it(tmp_path):
    project = make_project(tmp_path / "p")
    bomb = "stream:\n  tasks: &a0 [0, 0, 0, 0, 0, 0, 0, 0, 0]\n"
    for i in range(1, 9):
        bomb += f"  x{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]\n"
    params = (project / "params.yaml").read_text()
    (project / "params.yaml").write_text(params.replace("stream:\n", bomb, 1))
    proc = run(
        [sys.executable, "flows/pipeline.py", "--project", str(project)],
        project,
        check=False,
        timeout=120,
    )
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode == 2 and len(errors) == 1 and "params.yaml" in errors[0], proc.stderr
    assert not (project / "data" / "stream").exists()  # DVC ran no stage
