"""Progress of long loops, for a person to watch.

On a terminal, a tqdm bar. Elsewhere (a stage under `dvc repro` in a Prefect task, CI), a log
line at most every `CLFLOW_PROGRESS_SECONDS` (10 s) with step/total, rows/s and ETA, and one
line when a loop ends. While an MLflow run is live, the metric `progress` (the share of the
outermost loop done, nested loops counted in) every report.

Loops nest: a stage wraps its seeds in one `Progress`, `run_stream` each seed's batches in
another, so the outer share moves with every batch.
"""

from __future__ import annotations

import contextvars
import logging
import math
import os
import sys
import time
from types import TracebackType

log = logging.getLogger("clflow.progress")
EVERY_ENV = "CLFLOW_PROGRESS_SECONDS"
DEFAULT_EVERY = 10.0
_stack: contextvars.ContextVar[tuple[Progress, ...]] = contextvars.ContextVar(
    "clflow_progress", default=()
)


def report_every() -> float:
    """Seconds between two progress lines (CLFLOW_PROGRESS_SECONDS; a bad value: the default)."""
    try:
        value = float(os.environ.get(EVERY_ENV, DEFAULT_EVERY))
    except ValueError:
        return DEFAULT_EVERY
    return value if math.isfinite(value) and value >= 0 else DEFAULT_EVERY


def duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


class Progress:
    """A loop of `total` steps named `desc`; `update(n, rows=...)` after each step."""

    def __init__(
        self,
        total: int,
        desc: str,
        unit: str = "batches",
        *,
        every: float | None = None,
        summary: bool = True,
    ):
        self.summary = summary  # one line when the loop ends (off for loops that run often)
        self.total = max(int(total), 0)
        self.desc = desc
        self.unit = unit
        self.every = report_every() if every is None else every
        self.n = 0
        self.rows = 0

    def __enter__(self) -> Progress:
        self._token = _stack.set((*_stack.get(), self))
        self.t0 = self._last = time.monotonic()
        self._bar = None
        if sys.stderr.isatty():
            from tqdm.auto import tqdm

            depth = len(_stack.get()) - 1
            self._bar = tqdm(
                total=self.total, desc=self.desc, unit=self.unit, leave=False, position=depth
            )
        return self

    def update(self, n: int = 1, rows: int = 0) -> None:
        self.n += n
        self.rows += rows
        if self._bar is not None:
            self._bar.update(n)
        now = time.monotonic()
        if now - self._last >= self.every:
            self._last = now
            self._report(now)

    def fraction(self) -> float:
        """Share done, counting the loop nested in this one."""
        stack = _stack.get()
        inner = stack[stack.index(self) + 1].fraction() if stack[-1] is not self else 0.0
        return min(1.0, (self.n + inner) / self.total) if self.total else 1.0

    def line(self, now: float) -> str:
        elapsed = max(now - self.t0, 1e-9)
        rate = self.n / elapsed
        pct = 100.0 * self.n / self.total if self.total else 100.0
        parts = [f"{self.desc}: {pct:3.0f}% {self.n:,}/{self.total:,} {self.unit}"]
        if self.rows:
            parts.append(f"{self.rows / elapsed:,.0f} rows/s")
        eta = (self.total - self.n) / rate if rate > 0 else float("inf")
        parts.append(f"ETA {duration(eta)}")
        root = _stack.get()[0]
        if root is not self:
            done = root.fraction()
            total = (now - root.t0) / done if done > 0 else float("inf")
            parts.append(f"{root.desc} {100 * done:.0f}%, ETA {duration(total - (now - root.t0))}")
        return ", ".join(parts)

    def _report(self, now: float) -> None:
        if self._bar is None:
            log.info("%s", self.line(now))
        _mlflow_progress(_stack.get()[0].fraction())

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._bar is not None:
            self._bar.close()
        if exc_type is None and self.summary:
            elapsed = time.monotonic() - self.t0
            speed = f", {self.rows / max(elapsed, 1e-9):,.0f} rows/s" if self.rows else ""
            log.info(
                "%s: %s %s in %s%s", self.desc, f"{self.n:,}", self.unit, duration(elapsed), speed
            )
            _mlflow_progress(_stack.get()[0].fraction())
        _stack.reset(self._token)


_progress_step = 0
_detached = False


def detach() -> None:
    """In a worker process: forget the parent's loops and never log to its MLflow run (the
    parent reports the workers' progress as their results come back)."""
    global _detached
    _detached = True
    _stack.set(())


def _mlflow_progress(value: float) -> None:
    """Log `progress` to the live MLflow run, if any (never imports MLflow itself)."""
    global _progress_step
    mlflow = sys.modules.get("mlflow")
    if _detached or mlflow is None or mlflow.active_run() is None:
        return
    try:
        mlflow.log_metric("progress", round(value, 4), step=_progress_step)
        _progress_step += 1
    except Exception as exc:  # a tracking hiccup must never stop training
        log.debug("progress not logged to MLflow: %s", exc)
