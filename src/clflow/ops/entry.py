"""What every entry point shares: its command line (argument types too), its logging, and the
skeleton of a DVC stage (`StageCommand`).

Nothing heavy is imported at the top: a stage's `--help` answers before torch, polars or
MLflow load.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import clflow.ops.quiet  # noqa: F401  (before MLflow loads: telemetry off)

if TYPE_CHECKING:
    from clflow.config import Params
    from clflow.streams import Stream


def stage_args(
    doc: str | None, reads: str, argv: list[str] | None, **paths: str
) -> argparse.Namespace:
    """Parse `--params` plus one `--<name>` option per input/output path (underscores become
    dashes)."""
    parser = argparse.ArgumentParser(
        description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--params", default="params.yaml", help=f"parameters file (reads {reads})")
    for name, default in paths.items():
        parser.add_argument(
            f"--{name.replace('_', '-')}", dest=name, default=default, help=f"default: {default}"
        )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    torch = sys.modules.get("torch")  # not imported here: a stage without torch stays light
    if torch is not None and torch.get_num_threads() != 1:
        torch.set_num_threads(1)  # one thread per learner process: see clflow.util.parallel
    return args


def finite(text: str) -> float:
    """argparse type: a finite number."""
    value = float(text)
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
    return value


def _bounded(convert: Callable[[str], Any], low: float, strict: bool, what: str):
    """An argparse type: `convert`, then at least `low` (more than it when `strict`)."""

    def check(text: str) -> Any:
        value = convert(text)
        if value < low or (strict and value == low):
            raise argparse.ArgumentTypeError(f"must be {what}, got {text}")
        return value

    check.__doc__ = f"argparse type: {what}."
    return check


positive_int = _bounded(int, 1, False, "at least 1")
count = _bounded(int, 0, False, "0 or more")
wait_seconds = _bounded(finite, 0, False, "0 seconds or more")  # 0: do not wait
seconds = _bounded(finite, 0, True, "more than 0 seconds")
positive = _bounded(finite, 0, True, "more than 0")
window_rows = _bounded(int, 10, False, "at least 10 rows")  # fewer: no test has power


def probability(text: str) -> float:
    """argparse type: a probability strictly between 0 and 1."""
    value = finite(text)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text}")
    return value


@dataclass(frozen=True)
class StageCommand:
    """A DVC stage's command line and skeleton: `--params` and one `--<name>` option per path
    (`paths`: name -> default); `outs` names the paths that change together or not at all."""

    name: str
    doc: str | None
    reads: str
    paths: Mapping[str, str]
    outs: tuple[str, ...] = ()

    def parse(self, argv: list[str] | None) -> argparse.Namespace:
        return stage_args(self.doc, self.reads, argv, **self.paths)

    @contextmanager
    def run(self, argv: list[str] | None) -> Iterator[StageRun]:
        """Read the command line (`--help` ends here), stage the outs and read the params.

        The outs are written under temporary names and renamed into place only when the block
        ends without an error: a failing or killed stage leaves the previous outs as they were.
        """
        args = self.parse(argv)
        from clflow.config import load_params
        from clflow.util.io import StagedOuts
        from clflow.util.parallel import Cluster, using_cluster
        from clflow.util.progress import duration

        t0 = time.monotonic()
        params = load_params(args.params)
        cluster = Cluster(params.train.runner, params.train.address)
        with StagedOuts(*(getattr(args, o) for o in self.outs)) as staged, using_cluster(cluster):
            outs = {o: staged[getattr(args, o)] for o in self.outs}
            yield StageRun(self.name, args, params, outs)
        # one line a person (or clflow.ops.console, reading dvc's output) sees at the end
        logging.getLogger("clflow.stage").info(
            "%s: done in %s", self.name, duration(time.monotonic() - t0)
        )


@dataclass
class StageRun:
    """One run of a stage: its arguments, params, where to write each out (`outs`, staged), the
    stream it reads (`--stream`, loaded on first use) and its MLflow run (`tracked`)."""

    name: str
    args: argparse.Namespace
    params: Params
    outs: dict[str, Path] = field(default_factory=dict)

    @cached_property
    def stream(self) -> Stream:
        from clflow.streams import load_stream

        return load_stream(self.args.stream)

    @contextmanager
    def tracked(self, *sections: str, **extra: Any) -> Iterator[Any]:
        """The stage's MLflow run, with the named params sections (and `extra` values) logged;
        opened before long work, it shows the work's progress while it runs."""
        from clflow.tracking.runs import stage_run

        logged = {s: getattr(self.params, s).model_dump() for s in sections}
        with stage_run(self.name, {**logged, **extra}, self.params.tracking.experiment) as run:
            yield run
