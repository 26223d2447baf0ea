"""MLflow runs: one per stage execution, grouped under one parent run per pipeline run.

The Prefect flow creates the parent run and hands its id to the stages through
`CLFLOW_PARENT_RUN_ID`; a stage run logs its params, tags and lineage, its curves and models.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from clflow.tracking.provenance import (
    EXPERIMENT_ENV,
    FLOW_RUN_ENV,
    FLOW_URL_ENV,
    PARENT_ENV,
    PIPELINE_ENV,
    TAG_FLOW_RUN,
    TAG_FLOW_URL,
    TAG_LOCK,
    dvc_lock_hash,
    git_commit,
    lineage,
    log_lineage,
    prefect_flow_run,
    run_tags,
)
from clflow.tracking.store import URI_ENV, setup, tracking_uri


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


def process_start_ms() -> int:
    """When this process started (ms since the epoch): a stage run's real start time, though
    it opens its MLflow run only after training."""
    try:
        import psutil

        return int(psutil.Process().create_time() * 1000)
    except (ImportError, OSError):
        return int(time.time() * 1000)


@contextmanager
def stage_run(stage: str, params: Mapping[str, Any], experiment: str = "clflow") -> Iterator[Any]:
    """An MLflow run for one stage execution, with its params and tags logged."""
    import mlflow

    exp_id = setup(experiment)
    tags = run_tags(stage)
    created = mlflow.MlflowClient().create_run(
        exp_id, start_time=process_start_ms(), tags=tags, run_name=stage
    )
    with mlflow.start_run(run_id=created.info.run_id) as run:
        mlflow.log_params({k: str(v)[:500] for k, v in flatten(params).items()})
        log_lineage(lineage(tags))
        yield run


def log_curves(R: Any, prefix: str = "", loss: Any = None) -> None:
    """Per-experience results as curves: R[i][j] as `R.experience_j` and the mean accuracy on
    the experiences seen so far as `seen_accuracy`, both at step i; `loss` per batch (step =
    batch)."""
    import math

    import mlflow
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    metrics = []
    for i, row in enumerate(R):
        seen = [float(a) for a in row[: i + 1] if not math.isnan(float(a))]
        if seen:
            metrics.append(Metric(f"{prefix}seen_accuracy", sum(seen) / len(seen), now, i))
        metrics += [
            Metric(f"{prefix}R.experience_{j}", float(a), now, i)
            for j, a in enumerate(row)
            if not math.isnan(float(a))
        ]
    if loss is not None:
        metrics += [Metric(f"{prefix}loss", float(v), now, b) for b, v in enumerate(loss)]
    run_id = mlflow.active_run().info.run_id
    client = mlflow.MlflowClient()
    for start in range(0, len(metrics), 1000):  # MLflow takes at most 1000 metrics a batch
        client.log_batch(run_id, metrics=metrics[start : start + 1000])


def log_torch_model(model: Any, name: str, example: Any) -> str:
    """Log a torch module as an MLflow model with a signature from `example` (a few input rows);
    returns its model id.

    Requirements are pinned here because inferring them imports the world (slow).
    """
    import mlflow.pytorch
    import numpy as np
    import torch

    return mlflow.pytorch.log_model(
        model.cpu().eval(),
        name=name,
        input_example=np.asarray(example, dtype=np.float32),
        pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"],
    ).model_id


@contextmanager
def pipeline_run(
    project: str | Path, experiment: str | None = None, cached: bool = False
) -> Iterator[dict[str, str]]:
    """A parent MLflow run for one pipeline run; yields the env that makes stage runs its
    children. `cached` (DVC has nothing to run): no new, empty run; the env names the run
    that produced the current results (the pipeline run that left this dvc.lock), if any."""
    import mlflow

    from clflow.config import load_params

    root = Path(project).resolve()
    experiment = experiment or load_params(root / "params.yaml").tracking.experiment
    exp_id = setup(experiment, root)
    flow_run = prefect_flow_run()
    env = {URI_ENV: tracking_uri(root), EXPERIMENT_ENV: exp_id, **flow_run}
    if cached:
        yield {**env, PARENT_ENV: producing_run(exp_id, root)}
        return
    group = f"pipeline-{uuid.uuid4().hex[:12]}"
    tags = {
        "clflow.stage": "pipeline",
        "clflow.pipeline_run": group,
        "mlflow.source.git.commit": git_commit(root),
        TAG_FLOW_RUN: flow_run.get(FLOW_RUN_ENV, ""),
        TAG_FLOW_URL: flow_run.get(FLOW_URL_ENV, ""),
    }
    with mlflow.start_run(experiment_id=exp_id, run_name="pipeline", tags=tags) as run:
        yield {**env, PARENT_ENV: run.info.run_id, PIPELINE_ENV: group}
        mlflow.set_tag(TAG_LOCK, dvc_lock_hash(root))


def log_to_parent(env: Mapping[str, str], metrics: Mapping[str, float], tags: Mapping[str, str]):
    """Log to the pipeline run named in `env` (from the flow, outside any stage run)."""
    import mlflow

    client = mlflow.MlflowClient(env[URI_ENV])
    for key, value in metrics.items():
        client.log_metric(env[PARENT_ENV], key, float(value))
    for key, value in tags.items():
        client.set_tag(env[PARENT_ENV], key, value)


def stage_seconds(env: Mapping[str, str], stage: str, param: str) -> dict[str, float]:
    """{value of `param`: the `train_seconds` metric} of the `stage` runs under the pipeline run
    named in `env`."""
    import mlflow

    runs = mlflow.MlflowClient(env[URI_ENV]).search_runs(
        [env[EXPERIMENT_ENV]],
        filter_string=f"tags.`mlflow.parentRunId` = '{env[PARENT_ENV]}' and "
        f"tags.`clflow.stage` = '{stage}'",
    )
    return {
        r.data.params.get(param, ""): r.data.metrics["train_seconds"]
        for r in runs
        if "train_seconds" in r.data.metrics
    }


def producing_run(experiment_id: str, root: Path) -> str:
    """The newest pipeline run that ended with the project's current dvc.lock; "" if none
    (e.g. the results came from a plain `dvc repro`)."""
    import mlflow

    found = mlflow.MlflowClient().search_runs(
        [experiment_id],
        filter_string=f"tags.`clflow.stage` = 'pipeline' and tags.`{TAG_LOCK}` = "
        f"'{dvc_lock_hash(root)}'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    return found[0].info.run_id if found else ""
