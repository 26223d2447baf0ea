"""The command line every flow script shares, and its checks before anything runs."""

from __future__ import annotations

import argparse
import functools
import logging
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from clflow.errors import ClflowError, cli_errors
from clflow.ops.quiet import STARTUP_TIMEOUT

F = TypeVar("F", bound=Callable[..., object])
EPHEMERAL_TIMEOUT = "Timed out while attempting to connect to ephemeral Prefect API server"


def flow_settings(
    project: str | Path, stages: list[str] | None, stage_timeout: float | None
) -> tuple[list[str], dict[str, float]]:
    """Check a flow's project and stage names before anything is written (no `.clflow/` in a
    wrong directory, no retries of a typo); return the stages to run (all when None) and
    every stage's timeout."""
    from clflow.config import load_params
    from clflow.ops.dvcrun import check_stages, stage_names

    root = Path(project)
    if not root.is_dir():
        raise ClflowError("not a directory", file=root, field="--project")
    every = stage_names(root)
    check_stages(root, stages or [])
    flows = load_params(root / "params.yaml").flows
    check_stages(root, list(flows.stage_timeouts), field="flows.stage_timeouts")
    return stages or every, {s: stage_timeout or flows.timeout(s) for s in every}


def flow_parser(doc: str | None) -> argparse.ArgumentParser:
    """The options of every flow entry point: --project, --lock-timeout, --stage-timeout."""
    from clflow.ops.entry import seconds, wait_seconds

    parser = argparse.ArgumentParser(
        description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--project", default=".", help="clflow project directory (holds dvc.yaml)")
    parser.add_argument(
        "--lock-timeout",
        type=wait_seconds,
        default=600.0,
        help="seconds to wait while another run holds the project (default 600)",
    )
    parser.add_argument(
        "--stage-timeout",
        type=seconds,
        help="seconds any stage may run (default: flows.stage_timeout(s) in params.yaml)",
    )
    return parser


def start_flow_cli(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """Parse a flow's command line, make SIGTERM unwind it, and check a configured Prefect API."""
    from clflow.util.services import check_prefect_api

    args = parser.parse_args(argv)
    exit_on_sigterm()
    check_prefect_api()  # a configured server that is down: one line, not a retry loop
    return args


def exit_on_sigterm() -> None:
    """Turn SIGTERM into SystemExit, so a stopped flow unwinds: the stage it runs is stopped, the
    project lock released and Prefect's temporary API server shut down (no orphans)."""
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


class _UserErrorsWithoutTraceback(logging.Filter):
    """Prefect logs a task or flow exception with its traceback; a ClflowError is a user error: one
    line."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, ClflowError):
            record.exc_info, record.exc_text = None, None
        return True


def flow_main(func: F) -> F:
    """`cli_errors` for a flow script's `main()`; Prefect's temporary API server that does not
    start in time is one line too, naming the setting to raise (not Prefect's 60-line trace)."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except RuntimeError as err:
            if EPHEMERAL_TIMEOUT not in str(err):
                raise
            waited = os.environ.get(STARTUP_TIMEOUT, "20")
            raise ClflowError(
                f"Prefect's temporary API server did not start within {waited} s: raise "
                f"{STARTUP_TIMEOUT}, or run `prefect server start` and set PREFECT_API_URL"
            ) from None

    return cli_errors(wrapper)  # type: ignore[return-value]


for _name in ("prefect.flow_runs", "prefect.task_runs"):
    logging.getLogger(_name).addFilter(_UserErrorsWithoutTraceback())
    # flow and task runs log at INFO to the Prefect API (the run pages), whatever the
    # console's PREFECT_LOGGING_LEVEL (the Makefile keeps the console at WARNING)
    logging.getLogger(_name).setLevel(logging.INFO)
