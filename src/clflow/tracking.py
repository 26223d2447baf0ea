"""MLflow tracking for stage runs.

Default store: `sqlite:///mlflow.db` at the project root with artifacts in `mlruns/`;
`MLFLOW_TRACKING_URI` wins. Every run is tagged with the git commit and the
`dvc.lock` hash, and grouped under one pipeline run: the Prefect flow creates a
parent run and hands its id to the stages through `CLFLOW_PARENT_RUN_ID`.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

PARENT_ENV = "CLFLOW_PARENT_RUN_ID"
PIPELINE_ENV = "CLFLOW_PIPELINE_RUN"
URI_ENV = "MLFLOW_TRACKING_URI"
EXPERIMENT_ENV = "CLFLOW_EXPERIMENT_ID"


def tracking_uri(root: Path | None = None) -> str:
    """The user's MLFLOW_TRACKING_URI, else `sqlite:///<root>/mlflow.db`."""
    root = (root or Path.cwd()).resolve()
    return os.environ.get(URI_ENV) or f"sqlite:///{root / 'mlflow.db'}"


def use_store(uri: str) -> None:
    """Point MLflow's fluent API at `uri` without touching the environment.

    mlflow.set_tracking_uri() also writes MLFLOW_TRACKING_URI into os.environ, so in
    a long-lived process (a Prefect worker, a test session) the next project would
    log into this one's store. Put the environment back as it was.
    """
    import mlflow

    before = os.environ.get(URI_ENV)
    mlflow.set_tracking_uri(uri)
    if before is None:
        os.environ.pop(URI_ENV, None)
    else:
        os.environ[URI_ENV] = before


def git_commit(root: Path | None = None) -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=root or Path.cwd(),
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 else "unknown"


def dvc_lock_hash(root: Path | None = None) -> str:
    lock = (root or Path.cwd()) / "dvc.lock"
    return hashlib.sha256(lock.read_bytes()).hexdigest()[:16] if lock.exists() else "none"


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'a': {'b': 1}} -> {'a.b': 1}"""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def setup(experiment: str, root: Path | None = None) -> str:
    """Point MLflow at the project store and make sure the experiment exists; return its id."""
    import mlflow

    from clflow.services import check_tracking_uri

    root = (root or Path.cwd()).resolve()
    uri = tracking_uri(root)
    check_tracking_uri(uri)  # a server that is down: one line naming it, in bounded time
    use_store(uri)
    found = mlflow.get_experiment_by_name(experiment)
    if found is not None:
        return found.experiment_id
    return mlflow.create_experiment(experiment, artifact_location=(root / "mlruns").as_uri())


def run_tags(stage: str, root: Path | None = None) -> dict[str, str]:
    tags = {
        "clflow.stage": stage,
        "clflow.pipeline_run": os.environ.get(PIPELINE_ENV) or f"adhoc-{uuid.uuid4().hex[:8]}",
        "mlflow.source.git.commit": git_commit(root),
        "clflow.dvc_lock": dvc_lock_hash(root),
    }
    if os.environ.get(PARENT_ENV):
        tags["mlflow.parentRunId"] = os.environ[PARENT_ENV]
    return tags


@contextmanager
def stage_run(stage: str, params: Mapping[str, Any], experiment: str = "clflow") -> Iterator[Any]:
    """An MLflow run for one stage execution, with its params and tags logged."""
    import mlflow

    exp_id = setup(experiment)
    with mlflow.start_run(experiment_id=exp_id, run_name=stage, tags=run_tags(stage)) as run:
        mlflow.log_params({k: str(v)[:500] for k, v in flatten(params).items()})
        yield run


def log_torch_model(model: Any, name: str, example: Any) -> None:
    """Log a torch module as an MLflow model with a signature from `example` (a few input rows).

    Requirements are pinned here because inferring them imports the world (slow).
    """
    import mlflow.pytorch
    import numpy as np
    import torch

    mlflow.pytorch.log_model(
        model.cpu().eval(),
        name=name,
        input_example=np.asarray(example, dtype=np.float32),
        pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"],
    )


@contextmanager
def pipeline_run(project: str | Path, experiment: str | None = None) -> Iterator[dict[str, str]]:
    """A parent MLflow run for one pipeline run; yields the env that makes stage runs its
    children."""
    import mlflow

    from clflow.config import load_params

    root = Path(project).resolve()
    experiment = experiment or load_params(root / "params.yaml").tracking.experiment
    exp_id = setup(experiment, root)
    group = f"pipeline-{uuid.uuid4().hex[:12]}"
    tags = {
        "clflow.stage": "pipeline",
        "clflow.pipeline_run": group,
        "mlflow.source.git.commit": git_commit(root),
    }
    with mlflow.start_run(experiment_id=exp_id, run_name="pipeline", tags=tags) as run:
        env = {
            PARENT_ENV: run.info.run_id,
            PIPELINE_ENV: group,
            URI_ENV: tracking_uri(root),
            EXPERIMENT_ENV: exp_id,
        }
        yield env
        mlflow.set_tag("clflow.dvc_lock", dvc_lock_hash(root))
