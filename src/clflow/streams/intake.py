"""The intake: take every file in `data/incoming/`, accept it into `data/experiences/` or move
it aside with its reason.

Intake takes only complete regular files: a `*.parquet` entry that is a directory,
a symlink, a FIFO or over MAX_BYTES is moved aside unread, and one modified in the
last SETTLE_SECONDS is left for the next run (it may still be being written; the
safe way to deliver is to write `name.parquet.tmp` and rename it, since only
`*.parquet` names are read). A file is judged by the stream it would produce: the
project's duplicate policy (`stream.duplicates`) is applied to the stream with the
file appended, so a file that `prepare` would refuse never gets in.
"""

from __future__ import annotations

import stat
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from clflow.errors import StreamError
from clflow.streams.duplicates import Policy, apply_policy
from clflow.streams.experience import (
    IncompleteFile,
    TextInput,
    accepted_files,
    accepted_sources,
    n_task_ids,
    read_experience,
    read_incoming,
    record_source,
    with_experience,
    write_experience,
)
from clflow.streams.schema import Stream
from clflow.util.io import free_name, read_json, write_json
from clflow.util.progress import Progress

MAX_BYTES = 2 << 30  # an incoming file larger than 2 GiB is refused unread
SETTLE_SECONDS = 2.0  # a file modified more recently may still be being written
# a parquet file without its footer waits this long for its writer, then is refused
INCOMPLETE_WAIT = 600.0
PENDING = Path(".clflow") / "pending-update.json"  # accepted files whose update has not finished
EXPERIENCES = Path("data") / "experiences"
MAX_PENDING_BYTES = 16 << 20  # a list of file names, not data


def pending(project: str | Path) -> list[str]:
    """Accepted experience files that no update has trained and registered yet.

    The record must be what `set_pending` writes: a JSON list of accepted files of
    `data/experiences/` that exist. Anything else stops the update with one line, since
    guessing would train on the wrong data or drop data an update still owes.
    """
    root = Path(project).resolve()
    path = root / PENDING
    if not path.exists() and not path.is_symlink():
        return []
    fix = "delete it to finish no earlier update, or restore it"
    names = read_json(path, MAX_PENDING_BYTES, fix, error=StreamError)
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise StreamError(f"expected a list of file names; {fix}", file=path)
    accepted = {str(f.resolve()) for f in accepted_files(root / EXPERIENCES)}
    for name in names:
        if str((root / name).resolve()) not in accepted:
            raise StreamError(
                f"{name!r:.200} is not an accepted file of {EXPERIENCES}; {fix}", file=path
            )
    return names


def set_pending(project: str | Path, files: list[str]) -> None:
    """Record (or, with [], clear) the files an update still owes the model; survives a failed
    run."""
    path = Path(project) / PENDING
    if not files:
        path.unlink(missing_ok=True)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, sorted(set(files)))


@dataclass(frozen=True)
class Intake:
    """What one intake did: accepted files (their new paths), rejected files with reasons, and
    files left for the next run (still being written)."""

    accepted: list[str]
    rejected: dict[str, str]
    waiting: list[str] = field(default_factory=list)


def _reject(path: Path, rejected_dir: Path, reason: str) -> None:
    """Move a bad entry aside (a rename, whatever it is) with its reason beside it."""
    rejected_dir.mkdir(parents=True, exist_ok=True)
    target = free_name(rejected_dir / path.name)  # keep earlier rejects of the same name
    (target.parent / f"{target.name}.reason.txt").write_text(reason + "\n")
    path.replace(target)


EntryState = Literal["ready", "waiting", "refused"]


def _entry_state(path: Path, now: float, settle: float) -> tuple[EntryState, str]:
    """Whether `path` can be read as an experience file now, and why not (judged from lstat:
    the entry is never opened here)."""
    st = path.lstat()
    if stat.S_ISLNK(st.st_mode):
        return "refused", "a symlink, not a regular file: copy the file itself into data/incoming/"
    if not stat.S_ISREG(st.st_mode):
        kind = "directory" if stat.S_ISDIR(st.st_mode) else "special file (FIFO, device, socket)"
        return "refused", f"a {kind}, not a regular file"
    if st.st_size > MAX_BYTES:
        return "refused", f"{st.st_size} bytes, over the {MAX_BYTES} byte limit for one experience"
    if now - st.st_mtime < settle:
        return "waiting", "modified just now: it may still be being written"
    return "ready", ""


def wait_for_files(
    incoming: str | Path, seconds: float, poll: float = 2.0, settle: float = SETTLE_SECONDS
) -> list[str]:
    """Wait up to `seconds` until `incoming` holds a `*.parquet` file that has settled; the names
    of those there then (none when the time ran out)."""
    deadline = time.monotonic() + seconds
    while True:
        now = time.time()
        found = [
            p.name
            for p in sorted(Path(incoming).glob("*.parquet"))
            if _entry_state(p, now, settle)[0] == "ready"
        ]
        if found or time.monotonic() >= deadline:
            return found
        time.sleep(min(poll, max(deadline - time.monotonic(), 0.0)))


def intake(
    incoming: str | Path,
    experiences: str | Path,
    stream: Stream,
    *,
    test_size: float = 0.3,
    seed: int = 0,
    duplicates: Policy = "keep",
    settle: float = SETTLE_SECONDS,
    incomplete_wait: float = INCOMPLETE_WAIT,
    text: TextInput | None = None,
) -> Intake:
    """Validate every `*.parquet` in `incoming` against `stream`; accept into `experiences` or move
    aside.

    An accepted file is written (atomically) into `experiences` and its digest recorded
    before the source is removed, so a crash never loses a file: after one between the
    record and the removal, the source is rejected next time as already accepted. A crash
    between the write and the record (two renames apart) would accept it a second time.
    `text`: a text stream's limit and embedding (its files carry `text` in place of `x`).
    """
    incoming, experiences = Path(incoming), Path(experiences)
    rejected_dir = incoming / "rejected"
    if rejected_dir.exists() and not rejected_dir.is_dir():
        raise StreamError("must be a directory (bad files are moved there)", file=rejected_dir)
    seen = {entry.get("sha256") for entry in accepted_sources(experiences).values()}
    accepted, rejected, waiting = [], {}, []
    index = len(accepted_files(experiences))
    max_abs = float(np.abs(stream.train.X).max()) if len(stream.train) else None
    now = time.time()
    files = sorted(incoming.glob("*.parquet"))
    with Progress(len(files), "intake", unit="files", summary=bool(files)) as progress:
        for path in files:
            try:
                state, why = _entry_state(path, now, settle)
                if state == "refused":
                    raise StreamError(why, file=path)
                if state == "ready":
                    try:
                        incoming_file = read_incoming(path, MAX_BYTES)
                    except IncompleteFile as err:  # its writer may not be done: wait, then refuse
                        if now - path.stat().st_mtime >= incomplete_wait:
                            waited = f"{err.message} for {incomplete_wait:.0f} s"
                            raise StreamError(waited, file=path) from None
                        state = "waiting"
                if state == "waiting":
                    waiting.append(path.name)
                    progress.update(1)
                    continue
                digest = incoming_file.sha256
                if digest in seen:
                    raise StreamError("the same file was already accepted", file=path)
                exp = read_experience(
                    incoming_file,
                    stream.n_features,
                    len(stream.classes),
                    test_size=test_size,
                    seed=seed,
                    n_tasks=n_task_ids(stream),
                    max_abs=max_abs,
                    text=text,
                )
                # judge the stream this file would produce, as prepare will
                candidate = with_experience(stream, exp)
                apply_policy(candidate, duplicates, f"{path} appended to the stream")
            except (StreamError, OSError) as err:
                reason = err.line() if isinstance(err, StreamError) else f"{path}: {err.strerror}"
                rejected[path.name] = reason
                _reject(path, rejected_dir, reason)
                progress.update(1)
                continue
            out = write_experience(exp, experiences, index, path.stem)
            record_source(experiences, out.name, path.name, digest)
            path.unlink()
            seen.add(digest)
            accepted.append(str(out))
            stream, index = candidate, index + 1
            progress.update(1, rows=len(exp.train_y) + len(exp.test_y))
    return Intake(accepted, rejected, waiting)
