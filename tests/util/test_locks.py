"""Project and registry locks: exclusive, bounded waits with a clear message, gone when the holder
dies."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from clflow.util.locks import LockTimeout, file_lock, project_lock

HOLD = (
    "import sys, time; from clflow.util.locks import file_lock\n"
    "with file_lock(sys.argv[1]):\n print('held', flush=True); time.sleep(60)"
)


def holder(path):
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(path)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_second_holder_times_out_naming_the_file_and_pid(tmp_path):
    proc = holder(tmp_path / "x.lock")
    try:
        t0 = time.monotonic()
        with (
            pytest.raises(LockTimeout) as err,
            file_lock(tmp_path / "x.lock", timeout=0.5, what="the project"),
        ):
            pass
        assert time.monotonic() - t0 < 10
        assert (
            str(tmp_path / "x.lock") in err.value.line() and f"pid {proc.pid}" in err.value.line()
        )
    finally:
        proc.kill()
        proc.wait()


def test_lock_of_a_killed_process_is_free_at_once(tmp_path):
    proc = holder(tmp_path / "x.lock")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    with file_lock(tmp_path / "x.lock", timeout=0):  # no stale lock to clean up by hand
        pass


def test_waiter_gets_the_project_lock_when_the_holder_ends(tmp_path):
    (tmp_path / ".clflow").mkdir()
    proc = holder(tmp_path / ".clflow" / "run.lock")
    threading.Timer(1.0, proc.kill).start()
    with project_lock(tmp_path, timeout=30):
        assert proc.poll() is not None  # we only got it after the holder was gone
    proc.wait()
