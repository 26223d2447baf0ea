"""MLflow tracking for stage runs.

Default store: `sqlite:///mlflow.db` at the project root with artifacts in `mlruns/`;
`MLFLOW_TRACKING_URI` wins. Every run is tagged with the git commit, the `dvc.lock`
hash and the Prefect flow run that started it, and grouped under one pipeline run:
the Prefect flow creates a parent run and hands its id to the stages through
`CLFLOW_PARENT_RUN_ID`. A stage run also records its lineage (`lineage.json`): the
DVC hash of the stream it read (logged as an MLflow dataset input too) and the
accepted experience files with their SHA-256; `clflow lineage` reads it back.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import time
import uuid
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

PARENT_ENV = "CLFLOW_PARENT_RUN_ID"
PIPELINE_ENV = "CLFLOW_PIPELINE_RUN"
URI_ENV = "MLFLOW_TRACKING_URI"
EXPERIMENT_ENV = "CLFLOW_EXPERIMENT_ID"
FLOW_RUN_ENV, FLOW_URL_ENV = "CLFLOW_PREFECT_FLOW_RUN_ID", "CLFLOW_PREFECT_FLOW_RUN_URL"
TAG_FLOW_RUN, TAG_FLOW_URL = "clflow.prefect_flow_run_id", "clflow.prefect_flow_run_url"
TAG_STREAM, TAG_LOCK = "clflow.data.stream", "clflow.dvc_lock"
LINEAGE_FILE = "lineage.json"
STREAM_DIR, EXPERIENCES_DIR = "data/stream", "data/experiences"
# the MLflow UI opens an experiment of this kind as model training (not GenAI traces)
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}


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


def run_url(experiment_id: str, run_id: str) -> str:
    """The run's page in the MLflow UI (CLFLOW_MLFLOW_UI, default http://127.0.0.1:5000)."""
    ui = os.environ.get("CLFLOW_MLFLOW_UI", "http://127.0.0.1:5000").rstrip("/")
    return f"{ui}/#/experiments/{experiment_id}/runs/{run_id}" if run_id else ui


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
    if found is None:
        return mlflow.create_experiment(
            experiment, artifact_location=(root / "mlruns").as_uri(), tags=EXPERIMENT_KIND
        )
    for key, value in EXPERIMENT_KIND.items():  # experiments made before clflow set the kind
        if found.tags.get(key) != value:
            mlflow.MlflowClient().set_experiment_tag(found.experiment_id, key, value)
    return found.experiment_id


def dvc_out_hash(out: str, root: Path | None = None) -> str | None:
    """The hash `dvc.lock` records for the out at `out` (e.g. `data/stream`), or None."""
    import yaml

    lock = (root or Path.cwd()) / "dvc.lock"
    if not lock.exists():
        return None
    stages = (yaml.safe_load(lock.read_text()) or {}).get("stages", {})
    for stage in stages.values():
        for entry in stage.get("outs", []):
            if entry.get("path") == out:
                return entry.get("md5")
    return None


def experience_files(root: Path | None = None) -> list[dict[str, str]]:
    """The accepted experience files (arrival order) with their SHA-256, and the incoming file
    each came from (name and SHA-256, as the intake recorded them)."""
    from clflow.streams.incoming import accepted_files, accepted_sources, file_digest

    directory = (root or Path.cwd()) / EXPERIENCES_DIR
    sources = accepted_sources(directory)
    return [
        {
            "name": path.name,
            "sha256": file_digest(path),
            "source": sources.get(path.name, {}).get("source", ""),
            "source_sha256": sources.get(path.name, {}).get("sha256", ""),
        }
        for path in accepted_files(directory)
    ]


def lineage(tags: Mapping[str, str], root: Path | None = None) -> dict[str, Any]:
    """What a run was made from: code, pipeline state and Prefect flow run (from its `run_tags`,
    not looked up again), data version and experience files."""
    return {
        "git_commit": tags["mlflow.source.git.commit"],
        "dvc_lock": tags[TAG_LOCK],
        "stream": {"path": STREAM_DIR, "dvc_md5": dvc_out_hash(STREAM_DIR, root)},
        "experiences": experience_files(root),
        "prefect_flow_run": {"id": tags.get(TAG_FLOW_RUN, ""), "url": tags.get(TAG_FLOW_URL, "")},
    }


def log_lineage(record: Mapping[str, Any]) -> None:
    """Log `record` to the active run: lineage.json, and the stream's DVC hash as a dataset
    input (the run page's "Datasets" shows the data version)."""
    import mlflow
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset

    mlflow.log_dict(dict(record), LINEAGE_FILE)
    digest = record["stream"]["dvc_md5"]
    if digest:
        mlflow.set_tag(TAG_STREAM, digest)
        with warnings.catch_warnings():  # MLflow registers its local source twice ("", file)
            warnings.simplefilter("ignore", UserWarning)
            source = resolve_dataset_source(str((Path.cwd() / STREAM_DIR).resolve()))
        mlflow.log_input(MetaDataset(source, name=STREAM_DIR, digest=digest), context="training")


def run_tags(stage: str, root: Path | None = None) -> dict[str, str]:
    tags = {
        "clflow.stage": stage,
        "clflow.pipeline_run": os.environ.get(PIPELINE_ENV) or f"adhoc-{uuid.uuid4().hex[:8]}",
        "mlflow.source.git.commit": git_commit(root),
        TAG_LOCK: dvc_lock_hash(root),
        TAG_FLOW_RUN: os.environ.get(FLOW_RUN_ENV, ""),
        TAG_FLOW_URL: os.environ.get(FLOW_URL_ENV, ""),
    }
    if os.environ.get(PARENT_ENV):
        tags["mlflow.parentRunId"] = os.environ[PARENT_ENV]
    return {k: v for k, v in tags.items() if v}


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


def prefect_flow_run() -> dict[str, str]:
    """The env naming the Prefect flow run this code runs in (id and UI URL); empty outside
    one. The URL needs PREFECT_UI_URL (derived from PREFECT_API_URL for a `prefect server`);
    ephemeral mode has no UI, so no URL."""
    try:
        from prefect.runtime import flow_run
        from prefect.settings import PREFECT_UI_URL
    except ImportError:
        return {}
    run_id = flow_run.get_id()
    if not run_id:
        return {}
    ui = PREFECT_UI_URL.value()
    url = f"{ui.rstrip('/')}/flow-runs/flow-run/{run_id}" if ui else ""
    return {FLOW_RUN_ENV: str(run_id), FLOW_URL_ENV: url}
