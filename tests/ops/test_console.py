"""What a person sees of a flow's stages (`ops/console.py`): stage lines, a live bar on a
terminal, plain lines at most every 10 s elsewhere; and through a real pseudo-terminal."""

from __future__ import annotations

import io
import os
import pty
import select
import subprocess
import sys
import time

import pytest
from conftest import copy_project

from clflow.ops.console import StageConsole
from clflow.scaffold import update_params
from clflow.util.progress import EVERY_ENV

LINES = [
    "Running stage 'tame':",
    "> python stages/tame.py",
    "clflow.progress: tame: 10% 1/10 seeds, ETA 9 s",
    "clflow.progress: tame: 20% 2/10 seeds, ETA 8 s",
    "clflow.tame: an ordinary log line",
    "clflow.stage: tame: done in 41 s",
    "Stage 'register' didn't change, skipping",
]


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def follow(stream, every: float) -> tuple[str, list[str]]:
    logged: list[str] = []
    on_line = StageConsole(stream, every=every).follow(logged.append)
    for line in LINES:
        on_line(line + "\n")
    return stream.getvalue(), logged


def test_a_terminal_gets_stage_lines_and_a_live_bar(monkeypatch):
    monkeypatch.delenv(EVERY_ENV, raising=False)
    shown, logged = follow(Terminal(), every=3600)
    assert "\rtame: running" not in shown and shown.startswith("tame: running\n")
    assert "\r\x1b[K  tame [##..................]  10% 1/10 seeds, ETA 9 s" in shown
    assert "\r\x1b[K  tame [####................]  20% 2/10 seeds, ETA 8 s" in shown
    assert "\r\x1b[Ktame: ran in 41 s\n" in shown  # the bar is cleared first
    assert shown.endswith("register: cached (DVC skipped it: nothing it reads changed)\n")
    assert "ordinary" not in shown  # the rest stays in the task log
    # the task log gets every line but progress at most every `every` s: here the first only
    assert [ln.rstrip() for ln in logged] == [LINES[0], LINES[1], LINES[2], *LINES[4:]]
    assert StageConsole(Terminal()).env({"A": "1"}) == {"A": "1", EVERY_ENV: "1"}


def test_elsewhere_plain_lines_and_progress_at_most_every_period():
    shown, logged = follow(io.StringIO(), every=3600)
    assert shown.splitlines() == [
        "tame: running",
        "tame: 10% 1/10 seeds, ETA 9 s",  # the second came within the period
        "tame: ran in 41 s",
        "register: cached (DVC skipped it: nothing it reads changed)",
    ]
    assert "\r" not in shown and "\x1b" not in shown
    assert StageConsole(io.StringIO()).env({"A": "1"}) == {"A": "1"}
    assert len(follow(io.StringIO(), every=0)[0].splitlines()) == 5  # period 0: every line


def read_pty(fd: int, proc: subprocess.Popen, timeout: float) -> str:
    chunks, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 1.0)
        if ready:
            try:
                data = os.read(fd, 65536)
            except OSError:  # the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        elif proc.poll() is not None:
            break
    return b"".join(chunks).decode(errors="replace")


@pytest.mark.slow
def test_the_pipeline_flow_in_a_pseudo_terminal(built_project, tmp_path):
    """`python flows/pipeline.py` on a terminal: the stage that reruns shows its name, a live bar
    and its wall time; the ones DVC skips say so."""
    project = copy_project(built_project, tmp_path / "p")
    update_params(project, {"tame": {"min_rise": 0.41}})  # reruns tame, register
    main, child = pty.openpty()
    env = {k: v for k, v in os.environ.items() if k != EVERY_ENV}
    proc = subprocess.Popen(
        [sys.executable, "flows/pipeline.py"], cwd=project, env=env, stdin=child,
        stdout=child, stderr=child, start_new_session=True,
    )  # fmt: skip
    os.close(child)
    try:
        shown = read_pty(main, proc, 600)
    finally:
        os.close(main)
        proc.wait(timeout=60)
    assert proc.returncode == 0, shown[-3000:]
    assert "prepare: cached (DVC skipped it" in shown
    assert "tame: running" in shown
    assert "\x1b[K  " in shown and "] " in shown and "% " in shown and "ETA" in shown  # a bar
    assert "tame: ran in " in shown and "register: ran in " in shown
