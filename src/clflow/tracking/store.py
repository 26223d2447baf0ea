"""Where MLflow stores runs: the project's store, its experiment, a run's page in the UI.

Default store: `sqlite:///mlflow.db` at the project root with artifacts in `mlruns/`;
`MLFLOW_TRACKING_URI` wins (a tracking server keeps the artifacts of the experiments it makes).
"""

from __future__ import annotations

import os
from pathlib import Path

URI_ENV = "MLFLOW_TRACKING_URI"
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


# The UI keeps its GenAI / Model training toggle per browser, GenAI by default (mlflow#24498);
# this query parameter opens a page in the model-training view whatever the browser remembers.
TRAINING_VIEW = "workflowType=machine_learning"


def ui_base() -> str:
    """The MLflow UI's address (CLFLOW_MLFLOW_UI, default http://127.0.0.1:5000)."""
    return os.environ.get("CLFLOW_MLFLOW_UI", "http://127.0.0.1:5000").rstrip("/")


def run_url(experiment_id: str, run_id: str) -> str:
    """The run's page in the MLflow UI, in its model-training view."""
    ui = ui_base()
    return f"{ui}/#/experiments/{experiment_id}/runs/{run_id}?{TRAINING_VIEW}" if run_id else ui


def ui_links(experiment_id: str | None, model: str) -> dict[str, str]:
    """Direct links, in the model-training view: the experiment's training runs (when it
    exists) and the registered model."""
    ui = ui_base()
    links = {"models": f"{ui}/#/models/{model}?{TRAINING_VIEW}"}
    if experiment_id is not None:
        links = {"runs": f"{ui}/#/experiments/{experiment_id}/runs?{TRAINING_VIEW}", **links}
    return links


def experiment_id(name: str, root: Path | None = None) -> str | None:
    """The id of experiment `name` in the project's store, or None before the first run."""
    from mlflow.tracking import MlflowClient

    found = MlflowClient(tracking_uri(root)).get_experiment_by_name(name)
    return found.experiment_id if found is not None else None


def setup(experiment: str, root: Path | None = None) -> str:
    """Point MLflow at the project store and make sure the experiment exists; return its id."""
    import mlflow

    from clflow.util.services import check_tracking_uri

    root = (root or Path.cwd()).resolve()
    uri = tracking_uri(root)
    check_tracking_uri(uri)  # a server that is down: one line naming it, in bounded time
    use_store(uri)
    found = mlflow.get_experiment_by_name(experiment)
    if found is None:
        # a tracking server keeps the artifacts itself (proxied: every teammate reads them);
        # a local or database store keeps them in the project's mlruns/
        server = uri.startswith(("http://", "https://"))
        location = None if server else (root / "mlruns").as_uri()
        return mlflow.create_experiment(
            experiment, artifact_location=location, tags=EXPERIMENT_KIND
        )
    for key, value in EXPERIMENT_KIND.items():  # experiments made before clflow set the kind
        if found.tags.get(key) != value:
            mlflow.MlflowClient().set_experiment_tag(found.experiment_id, key, value)
    return found.experiment_id
