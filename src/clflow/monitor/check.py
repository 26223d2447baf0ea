"""The drift step: the newest window of served rows, scored against the reference of the model
version that answered them (its checkpoint, fetched from the MLflow registry)."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np

from clflow.monitor.drift import DriftDetector, DriftReport
from clflow.monitor.served import ServedLogError, Window, read_window


def tame_reference(learner) -> tuple[np.ndarray, np.ndarray]:
    """A TAME learner's reference rows (its experts' buffers) and the selector's routing of
    them."""
    X = np.concatenate([e.buffer.X for e in learner.experts_.values() if e.buffer.X is not None])
    return X, learner.route(X)


def load_learner(model: str, version: str):
    """The TAME learner of a registered model version, from its checkpoint artifact (no pickle,
    no model code imported from the registry)."""
    import mlflow

    from clflow.tame.persist import load_tame

    uri = f"models:/{model}/{version}/artifacts"
    found = [a.path for a in mlflow.artifacts.list_artifacts(uri) if a.path.endswith(".pt")]
    if len(found) != 1:
        raise ServedLogError(
            f"models:/{model}/{version} holds {len(found)} TAME checkpoints, expected 1",
            field="model_version",
        )
    with tempfile.TemporaryDirectory() as tmp:  # the checkpoint alone: a text model's encoder
        name = Path(found[0]).name  # stays in the registry
        path = mlflow.artifacts.download_artifacts(artifact_uri=f"{uri}/{name}", dst_path=tmp)
        learner, _ = load_tame(path)
    return learner


@dataclass
class Check:
    """One window's report and the window itself."""

    report: DriftReport
    window: Window

    def as_dict(self) -> dict:
        return {
            **self.report.as_dict(),
            "model": self.window.model,
            "start": self.window.rows["timestamp"].min().isoformat(),
            "end": self.window.end.isoformat(),
        }


def score_window(found: Window, alpha: float = 0.01) -> Check:
    """Score a window of served rows against the reference of the version that answered it."""
    learner = load_learner(found.model, found.version)
    X = found.X
    if X.shape[1] != learner.n_features_in_:
        raise ServedLogError(
            f"rows of {X.shape[1]} features; models:/{found.model}/{found.version} takes "
            f"{learner.n_features_in_}",
            file=found.segments[-1],
            field="x",
        )
    detector = DriftDetector(alpha=alpha).fit(*tame_reference(learner))
    report = detector.score(X, found.rows["expert"].to_numpy(), version=found.version)
    return Check(report, found)


def check(
    served: str | Path,
    window: int = 200,
    since: datetime | None = None,
    alpha: float = 0.01,
) -> Check:
    """Score the newest `window` served rows (after `since`) for drift."""
    return score_window(read_window(served, window, since), alpha)
