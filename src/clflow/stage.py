"""What every stage entry point shares: its command line and its logging."""

from __future__ import annotations

import argparse
import logging


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
    return args
