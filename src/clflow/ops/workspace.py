"""The Prefect pull step that runs a deployment's flow in the clone of the worker that took it.

A team shares one Prefect server and one set of deployments, but every teammate's worker runs
flows in their own clone (its DVC cache, its project lock). `prefect deploy` resolves `{{ $PWD }}`
once, on the deploying machine; this step is resolved when the run starts, on the worker's.
"""

from __future__ import annotations

import os
from pathlib import Path

from clflow.errors import ClflowError

ENV = "CLFLOW_WORKSPACE"


def set_workspace(directory: str | None = None) -> dict[str, str]:
    """Change into `directory`, else $CLFLOW_WORKSPACE (`make worker` sets it to its clone),
    else the directory the worker was started from ($PWD). Returns it as `directory`."""
    chosen = directory or os.environ.get(ENV) or os.environ.get("PWD") or ""
    path = Path(chosen).resolve()
    if not chosen or not (path / "dvc.yaml").is_file():
        raise ClflowError(
            f"not a clflow project ({ENV}={os.environ.get(ENV, '')!r}): start the worker "
            "with `make worker` in a clone, or set CLFLOW_WORKSPACE to one",
            file=path,
        )
    os.chdir(path)
    return {"directory": str(path)}
