"""Prefect flow `drift-watch`: is the served traffic drifting? If so, say it with an event.

1. read the served rows recorded by `clflow serve` (data/served/) since the last window this
   flow scored; wait until a full window of new rows has come;
2. score the window against the reference of the model version that answered it (clflow.monitor:
   MMD two-sample test, routing shift, share of rows far from every expert's buffer);
3. on drift, write the window to `data/to-label/` for annotation and emit the Prefect event
   `clflow.drift.detected` (resource `clflow.model.<name>`, payload: the report). prefect.yaml's
   `continual-update` deployment has a trigger on that event: it starts and takes in the
   labelled file as soon as it is dropped into `data/incoming/`.
Each window is scored once (`.clflow/drift-watch.json` keeps where the last one ended), so
one drifted window is one event. Run: `python flows/drift_watch.py --help`.
"""

from __future__ import annotations

import clflow.ops.quiet  # noqa: F401  (first: Prefect reads its settings when imported)

# isort: split
import json
import sys
from datetime import datetime
from pathlib import Path

from prefect import flow, get_run_logger

from clflow.monitor.check import score_window
from clflow.monitor.served import EmptyWindow, read_window, write_to_label
from clflow.ops.flowcli import flow_main, start_flow_cli
from clflow.tracking.store import tracking_uri, use_store
from clflow.util.io import read_json, write_json

EVENT = "clflow.drift.detected"
STATE = Path(".clflow") / "drift-watch.json"


def last_end(root: Path) -> datetime | None:
    """Where the last scored window ended (None before the first)."""
    state = root / STATE
    return datetime.fromisoformat(read_json(state, 4096)["end"]) if state.exists() else None


def emit_drift(report: dict) -> str | None:
    """The `clflow.drift.detected` event of one drifted window; its id (None without an API)."""
    from prefect.events import emit_event

    event = emit_event(
        event=EVENT,
        resource={
            "prefect.resource.id": f"clflow.model.{report['model']}",
            "prefect.resource.name": report["model"],
            "clflow.model.version": str(report["model_version"]),
        },
        payload=report,
    )
    return str(event.id) if event else None


@flow(name="drift-watch")
def drift_watch(
    project: str = ".", window: int = 200, alpha: float = 0.01, served: str = "data/served"
) -> dict:
    """Score the newest full window of served rows; on drift, emit the event and keep the rows
    for labelling."""
    logger = get_run_logger()
    root = Path(project).resolve()
    use_store(tracking_uri(root))  # the registry of the served versions
    since = last_end(root)
    try:
        rows = read_window(root / served, window, since)
    except EmptyWindow as err:
        logger.info("nothing to score: %s", err.line())
        return {"scored": False, "new_rows": 0}
    if rows.rows.height < window:  # too few for a fair test: wait, before loading the model
        logger.info("%d new served rows; waiting for %d", rows.rows.height, window)
        return {"scored": False, "new_rows": rows.rows.height}
    found = score_window(rows, alpha)
    report = found.as_dict()
    result = {"scored": True, **report}
    if found.report.drift:
        result["to_label"] = str(write_to_label(found.window, root / "data" / "to-label"))
        result["event"] = emit_drift(report)
        logger.warning("drift: %s", json.dumps(result))
    else:
        logger.info("no drift: %s", json.dumps(result))
    write_json(root / STATE, {"end": found.window.end.isoformat()})
    return result


@flow_main
def main(argv: list[str] | None = None) -> None:
    import argparse

    from clflow.ops.entry import probability, window_rows

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--project", default=".", help="clflow project directory")
    parser.add_argument("--window", type=window_rows, default=200, help="rows (default 200)")
    parser.add_argument(
        "--alpha", type=probability, default=0.01, help="false-alarm rate (default 0.01)"
    )
    args = start_flow_cli(parser, argv)
    print(json.dumps(drift_watch(args.project, args.window, args.alpha), indent=2))


if __name__ == "__main__":
    sys.exit(main())
