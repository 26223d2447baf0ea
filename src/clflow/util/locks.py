"""Inter-process file locks: one pipeline run per project, one registry decision at a time.

`flock` locks die with their process, so a run killed with SIGKILL never leaves
a stale lock behind; the pid written into the file only names the holder.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

from clflow.errors import ClflowError


class LockTimeout(ClflowError):
    """Another process held the lock for longer than the timeout."""


@contextmanager
def file_lock(path: str | Path, timeout: float = 0.0, what: str = "lock") -> Iterator[None]:
    """Hold an exclusive lock on `path`; wait up to `timeout` s (polling), then raise
    LockTimeout."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + timeout
        delay = 0.05
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
                    raise LockTimeout(
                        f"{what} is held by another run (pid {holder}); waited {timeout:g} s",
                        file=path,
                    ) from None
                time.sleep(delay)
                delay = min(delay * 2, 1.0)
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def project_lock(project: str | Path, timeout: float) -> AbstractContextManager[None]:
    """The lock every pipeline or continual-update run of `project` holds while it runs."""
    return file_lock(Path(project) / ".clflow" / "run.lock", timeout, what="the project")
