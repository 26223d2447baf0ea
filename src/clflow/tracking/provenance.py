"""What a run was made from: git commit, `dvc.lock` hash, Prefect flow run, data version.

Every run is tagged with the git commit, the `dvc.lock` hash and the Prefect flow run that
started it. A stage run also records its lineage (`lineage.json`): the DVC hash of the stream
it read (logged as an MLflow dataset input too) and the accepted experience files with their
SHA-256; `clflow lineage` reads it back.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import uuid
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

PARENT_ENV = "CLFLOW_PARENT_RUN_ID"
PIPELINE_ENV = "CLFLOW_PIPELINE_RUN"
EXPERIMENT_ENV = "CLFLOW_EXPERIMENT_ID"
FLOW_RUN_ENV, FLOW_URL_ENV = "CLFLOW_PREFECT_FLOW_RUN_ID", "CLFLOW_PREFECT_FLOW_RUN_URL"
TAG_FLOW_RUN, TAG_FLOW_URL = "clflow.prefect_flow_run_id", "clflow.prefect_flow_run_url"
TAG_STREAM, TAG_LOCK = "clflow.data.stream", "clflow.dvc_lock"
LINEAGE_FILE = "lineage.json"
STREAM_DIR, EXPERIENCES_DIR = "data/stream", "data/experiences"


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
    from clflow.streams.experience import accepted_files, accepted_sources, file_digest

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
