"""Atomic file writes: write to a temporary sibling, then rename into place.

A crash or a failing stage never leaves a half-written output behind, and a
stage's outs change all together (StagedOuts).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import polars as pl

from clflow.errors import ClflowError

_points = 0  # kill points passed in this process (test hook)
log = logging.getLogger("clflow.io")


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        kill_point(f"write {path}")
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


@contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary directory beside `path`; swap it in for `path` on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        kill_point(f"write {path}")
        old = path.with_name(f".{path.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        if path.exists():
            os.replace(path, old)
        os.replace(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write `obj` as indented JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")


def write_parquet(path: str | os.PathLike, df: pl.DataFrame) -> None:
    """Write a polars frame to parquet, atomically."""
    with atomic_path(path) as tmp:
        df.write_parquet(tmp)


def read_json(
    path: Path,
    max_bytes: int,
    hint: str = "",
    error: type[ClflowError] = ClflowError,
    symlinks: bool = False,
) -> Any:
    """A small JSON file's content, or one `error` line naming it (with `hint`, what to do):
    not a regular file (a symlink counts only with `symlinks`), over `max_bytes`, or not UTF-8
    JSON. The size is checked before anything is read."""
    tail = f"; {hint}" if hint else ""
    if (path.is_symlink() and not symlinks) or not path.is_file():
        raise error(f"not a regular file{tail}", file=path)
    if path.stat().st_size > max_bytes:
        raise error(f"over {max_bytes:,} bytes{tail}", file=path)
    try:
        return json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise error(f"not JSON ({err}){tail}", file=path) from None


def kill_point(label: str) -> None:
    """A test-only hook: SIGKILL this process at a point named by CLFLOW_TEST_KILL_AT.

    The points are each atomic write and each step of a StagedOuts commit; the
    variable names one by its number in this process (`3`) or by text in its label
    (`commit metrics/tame.json`: the first point whose label holds it).
    """
    at = os.environ.get("CLFLOW_TEST_KILL_AT")
    if not at:
        return
    global _points
    _points += 1
    if (at.isdigit() and int(at) == _points) or (not at.isdigit() and at in label):
        print(f"test hook: killed at point {_points}, {label}", file=sys.stderr, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)


class StagedOuts:
    """A stage's outs, changed all together or not at all.

    The stage writes each out at `staged[out]` (the out's own name inside a hidden sibling
    folder, so files logged from there keep their names); leaving the `with` block
    normally commits: the previous outs move aside, the staged ones move in
    (renames only, on one file system) and a journal beside the first out records the
    commit while it runs. A commit killed half-way is rolled back, to the previous outs
    that `dvc.lock` still describes, when the stage next starts (`dvc repro` reruns a
    stage whose outs changed). An exception discards the staged outs.
    """

    def __init__(self, *outs: str | os.PathLike):
        self.outs = [Path(o) for o in outs]
        self.journal = _hidden(self.outs[0], "commit.json")
        self.rollback()
        # what a killed run left: set-aside and staged copies, the journal's temp file
        for tmp in self.journal.parent.glob(f".{self.journal.name}.*.tmp"):
            tmp.unlink()
        for out in self.outs:
            _remove(_hidden(out, "prev"))
            _remove(_hidden(out, "staged"))

    def __getitem__(self, out: str | os.PathLike) -> Path:
        return _hidden(Path(out), "staged") / Path(out).name

    def __enter__(self) -> StagedOuts:
        for out in self.outs:
            self[out].parent.mkdir(parents=True)
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.commit()
        for out in self.outs:
            _remove(_hidden(out, "staged"))

    def commit(self) -> None:
        existed = [out.exists() for out in self.outs]
        write_json(self.journal, {"outs": self._names(), "existed": existed})
        # from here until the journal goes, a kill is undone by the next start (rollback)
        for out in self.outs:
            kill_point(f"commit {out}")
            if out.exists():
                os.replace(out, _hidden(out, "prev"))
            if self[out].exists():
                os.replace(self[out], out)
        kill_point("commit done")
        self.journal.unlink()  # the commit point: from here the new outs stand
        for out in self.outs:
            _remove(_hidden(out, "prev"))

    def rollback(self) -> None:
        """Undo a commit that was killed half-way (a journal is left): the previous outs return.

        Only a journal this commit would have written is acted on: one that names exactly these
        outs, with a set-aside copy only where an out existed. Anything else (garbage, another
        stage's, hand-made) is moved aside with a warning and nothing is renamed or deleted.
        """
        if not self.journal.exists() and not self.journal.is_symlink():
            return
        existed, problem = self._read_journal()
        if problem:
            aside = free_name(self.journal.with_name(f"{self.journal.name}.rejected"))
            os.replace(self.journal, aside)
            log.warning("%s: %s: moved to %s, not acted on", self.journal, problem, aside.name)
            return
        for out in self.outs:
            prev = _hidden(out, "prev")
            if prev.exists():
                _remove(out)
                os.replace(prev, out)
        # an out that did not exist before the commit goes again
        for out, was in zip(self.outs, existed):
            if not was:
                _remove(out)
        self.journal.unlink()

    def _names(self) -> list[str]:
        """The outs as the journal names them: relative to its folder, so a project that was
        moved or copied still recognises its own journal."""
        base = self.journal.parent.absolute()
        return [os.path.relpath(out.absolute(), base) for out in self.outs]

    def _read_journal(self) -> tuple[list[bool], str]:
        """The journal's `existed` flags, or why it is not this commit's journal."""
        try:
            data = read_json(self.journal, 1 << 20)
        except ClflowError as err:
            return [], err.message
        names = self._names()
        if not isinstance(data, dict) or set(data) != {"outs", "existed"}:
            return [], "not a journal: expected the keys outs and existed"
        if data["outs"] != names:
            return [], f"names outs {data['outs']!r:.200}, this stage's are {names}"
        existed = data["existed"]
        if not (isinstance(existed, list) and len(existed) == len(names)):
            return [], "existed must list one flag per out"
        if not all(isinstance(e, bool) for e in existed):
            return [], "existed must hold true or false"
        for out, was in zip(self.outs, existed):
            if not was and _hidden(out, "prev").exists():  # a commit sets aside only what existed
                return [], f"a set-aside copy of {out} that the journal says did not exist"
        return existed, ""


def _hidden(path: Path, what: str) -> Path:
    return path.with_name(f".{path.name}.{what}")


def free_name(path: Path) -> Path:
    """`path`, or `<stem>-1<suffix>`, `<stem>-2<suffix>`, ...: the first name not taken (a
    dangling symlink takes its name too). Keeps what an earlier move left there."""
    n, found = 0, path
    while found.exists() or found.is_symlink():
        n += 1
        found = path.with_name(f"{path.stem}-{n}{path.suffix}")
    return found


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)
