"""The settings every entry point starts with, as `make` sets them: telemetry off, offline
model hubs, a project-local Prefect home, time for Prefect's temporary API to start, and a
console that shows warnings (run pages in the Prefect UI keep INFO).

Importing this module applies them, before Prefect or MLflow read their settings: flow and
stage scripts import it first. A variable the user has set is left as it is.
"""

from __future__ import annotations

import os
from pathlib import Path

DEFAULTS = {
    "DO_NOT_TRACK": "1",
    "DVC_NO_ANALYTICS": "1",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    # Prefect gives its temporary API 20 s to start; a first start (database migrations) on a
    # busy 2-core machine takes longer
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "PREFECT_LOGGING_LEVEL": "WARNING",
    "PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL": "WARNING",
    # small artifacts (checkpoints, lineage.json): no download bars in logs
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
}
STARTUP_TIMEOUT = "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"


def apply(project: Path | None = None) -> None:
    """Set every default the environment lacks; Prefect's home is `<project>/.prefect` (the
    working directory by default, the project root when run as the README shows)."""
    for key, value in DEFAULTS.items():
        os.environ.setdefault(key, value)
    os.environ.setdefault("PREFECT_HOME", str((project or Path.cwd()).resolve() / ".prefect"))


apply()
