"""What every entry point shares: its command line (argument types too) and its logging."""

from __future__ import annotations

import argparse
import logging
import math
import sys


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
        torch.set_num_threads(1)  # one thread per learner process: see clflow.parallel
    return args


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def count(text: str) -> int:
    """argparse type: an integer >= 0."""
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def finite(text: str) -> float:
    """argparse type: a finite number."""
    value = float(text)
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
    return value


def seconds(text: str) -> float:
    """argparse type: a finite number of seconds > 0."""
    value = finite(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be more than 0 seconds, got {text}")
    return value
