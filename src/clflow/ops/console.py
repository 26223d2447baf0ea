"""What a person sees of a flow's DVC stages where they started it.

A flow runs each stage in `dvc repro` (or `dvc exp run`) and reads its output line by line: every
line goes to the Prefect task's log, as before. This module picks out what a person watching
wants, from the same lines:

- which stage runs (DVC's `Running stage 'tame':`), or that DVC skipped it (`Stage 'prepare'
  didn't change, skipping`);
- its progress (`clflow.progress` lines, see clflow.util.progress): on a terminal a live bar redrawn
  in place, fed every second (the stage is told so through CLFLOW_PROGRESS_SECONDS); elsewhere (CI,
  a Prefect worker) a plain line at most every 10 s;
- one line when it ends, with its wall time (the stage's own `clflow.stage: tame: done in ...`).

The task log keeps progress lines at most every 10 s too, even when the terminal gets one a
second.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import sys
import threading
import time
from collections.abc import Callable, Mapping
from typing import TextIO

from clflow.util.progress import DEFAULT_EVERY, EVERY_ENV

PROGRESS = re.compile(r"^clflow\.progress: (?P<desc>.+?): +(?P<pct>\d+)% (?P<rest>.+)$")
RUNNING = re.compile(r"^Running stage '(?P<stage>[^']+)'")
SKIPPED = re.compile(r"^Stage '(?P<stage>[^']+)' didn't change, skipping")
DONE = re.compile(r"^clflow\.stage: (?P<stage>[^:]+): done in (?P<took>.+)$")
LIVE_EVERY = "1"  # seconds between a stage's progress lines when a person watches a terminal
BAR = 20  # characters of the bar


class StageConsole:
    """Stage lines and live progress on `stream` (stderr); see the module doc."""

    def __init__(self, stream: TextIO | None = None, every: float = DEFAULT_EVERY):
        self.stream = stream if stream is not None else sys.stderr
        self.tty = self.stream.isatty()
        self.every = every
        self._live = False  # a bar is drawn on the current line
        self._logged = -math.inf  # when a progress line last went to the task log
        self._lock = threading.Lock()

    def env(self, env: Mapping[str, str]) -> dict[str, str]:
        """The stage's environment: on a terminal, progress every second (unless set)."""
        if not self.tty or EVERY_ENV in env or EVERY_ENV in os.environ:
            return dict(env)
        return {**env, EVERY_ENV: LIVE_EVERY}

    def follow(self, log_line: Callable[[str], None]) -> Callable[[str], None]:
        """A line callback for dvc's output: each line to `log_line` (progress lines at most
        every `every` s), and what a person wants to the console."""

        def on_line(line: str) -> None:
            text = line.rstrip()
            found = PROGRESS.match(text)
            if found is None:
                log_line(line)
                self._stage_line(text)
                return
            now = time.monotonic()
            due = now - self._logged >= self.every
            if due:
                self._logged = now
                log_line(text)
            if self.tty:
                self._bar(found)
            elif due:
                self.say(text.removeprefix("clflow.progress: "))

        return on_line

    def _stage_line(self, text: str) -> None:
        for pattern, form in (
            (RUNNING, "{stage}: running"),
            (SKIPPED, "{stage}: cached (DVC skipped it: nothing it reads changed)"),
            (DONE, "{stage}: ran in {took}"),
        ):
            found = pattern.match(text)
            if found:
                self.say(form.format(**found.groupdict()))
                return

    def say(self, text: str) -> None:
        """One line to the console (clearing a live bar first)."""
        with self._lock:
            clear = "\r\x1b[K" if self._live else ""
            self._live = False
            self.stream.write(f"{clear}{text}\n")
            self.stream.flush()

    def _bar(self, found: re.Match) -> None:
        pct = min(int(found["pct"]), 100)
        filled = BAR * pct // 100
        line = f"  {found['desc']} [{'#' * filled}{'.' * (BAR - filled)}] {pct:3d}% {found['rest']}"
        width = shutil.get_terminal_size((100, 20)).columns - 1
        with self._lock:
            self._live = True
            self.stream.write(f"\r\x1b[K{line[:width]}")
            self.stream.flush()
