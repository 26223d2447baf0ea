"""How a drift detector is judged on a request stream: when it alarms, how late after the shift,
and how often without one (what bench/drift.py reports for clflow and its peers)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from clflow.streams.schema import Stream


@dataclass(frozen=True)
class Requests:
    """Served rows in arrival order; rows from `shift` on come from the new task (None: none
    do)."""

    X: np.ndarray
    shift: int | None


def known_and_new(stream: Stream) -> tuple[Stream, np.ndarray, np.ndarray]:
    """The stream without its last experience (what the model learns), the test rows of the
    experiences it keeps (known) and those of the last one (new: a new class or domain)."""
    last = stream.n_experiences - 1
    trained = replace(
        stream,
        train=stream.train.select(stream.train.experience < last),
        test=stream.test.select(stream.test.experience < last),
    )
    new = stream.test.X[stream.test.experience == last]
    return trained, trained.test.X, new


def requests(
    known: np.ndarray, new: np.ndarray | None, before: int, after: int, seed: int
) -> Requests:
    """`before` known rows, then `after` new ones, each drawn at random with replacement (a
    served stream outlasts a test set); no new rows when `new` is None."""
    rng = np.random.default_rng(seed)
    rows = [known[rng.integers(0, len(known), before)]]
    if new is not None:
        rows.append(new[rng.integers(0, len(new), after)])
    return Requests(np.concatenate(rows), before if new is not None else None)


def windowed_alarms(
    drifted: Callable[[int, int], bool], n_rows: int, window: int, step: int
) -> list[int]:
    """Where a windowed test alarms as rows arrive `step` at a time: after each step, the last
    `window` rows (rows[lo:hi]) are tested once the window is full; an alarm starts a new
    window, as a monitor that raised one is reset."""
    alarms, start = [], 0
    for hi in range(step, n_rows + 1, step):
        if hi - start >= window and drifted(hi - window, hi):
            alarms.append(hi)
            start = hi
    return alarms


def delay(alarms: list[int], shift: int) -> int | None:
    """Rows after the shift until the first alarm at or after it (None: never)."""
    late = [a - shift for a in alarms if a > shift]
    return late[0] if late else None


def per_10k(alarms: list[int], n_rows: int) -> float:
    """Alarms per 10,000 rows (of a stream without a shift: false alarms)."""
    return 1e4 * len(alarms) / n_rows
