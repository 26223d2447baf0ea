"""The continual-update flow on a real project: intake, incremental TAME, registration, rejects."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest
from conftest import delivered, drop_experience, file_hashes, load_flow, make_project

pytestmark = pytest.mark.slow


def registry(project):
    from clflow.tracking.registry import Registry

    return Registry("clflow-tame", f"sqlite:///{project / 'mlflow.db'}")


def test_new_experience_ends_with_a_registered_version(updated_project):
    project, result, before = updated_project
    assert [p.rsplit("/", 1)[-1] for p in result["accepted"]] == ["0000-rotated.parquet"]
    assert result["stages"] == {
        "prepare": "ran",
        "embed_classes": "cached",
        "tame": "ran",
        "register": "ran",
    }
    assert result["pushed"].startswith("not pushed: no default DVC remote")  # update.push: true
    reg = registry(project)
    assert result["register"]["version"] == 2
    assert str(reg.version("challenger").version) == "2"
    tags = reg.get(2).tags
    assert tags["clflow.decision"] in {"promoted", "rejected"} and tags["clflow.reason"]
    assert tags["clflow.experiences"] == "6"
    # TAME continued from its checkpoint instead of retraining
    assert (
        json.loads((project / "metrics" / "tame.json").read_text())["resumed_from_experience"]
        == 5.0
    )


def test_the_update_is_compared_with_a_retrain_from_scratch(updated_project):
    """update.compare_retrain: TAME also retrained on all six experiences in a DVC experiment;
    the workspace keeps the incremental model; both costs reach the artifact and MLflow."""
    import mlflow

    from clflow.ops.dvcrun import experiment_metrics

    project, result, _ = updated_project
    found = result["compare_retrain"]
    scratch = experiment_metrics(project, found["experiment"])["tame"]
    assert scratch["resumed_from_experience"] == 0.0 and scratch["experiences"] == 6.0
    assert found["retrain_avg_accuracy"] == scratch["avg_accuracy"]
    workspace = json.loads((project / "metrics" / "tame.json").read_text())
    assert workspace["resumed_from_experience"] == 5.0  # untouched by the experiment
    assert found["incremental_avg_accuracy"] == workspace["avg_accuracy"]
    assert found["incremental_seconds"] > 0 and found["retrain_seconds"] > 0
    client = mlflow.MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    exp = client.get_experiment_by_name("clflow")
    [parent] = [
        r
        for r in client.search_runs([exp.experiment_id], "tags.`clflow.stage` = 'pipeline'")
        if "update.retrain_seconds" in r.data.metrics
    ]
    assert parent.data.metrics["update.retrain_avg_accuracy"] == found["retrain_avg_accuracy"]
    assert parent.data.tags["update.retrain_exp"] == found["experiment"]


def test_compare_retrain_without_a_committed_dvc_lock_stops_before_anything(tmp_path):
    from clflow.errors import ClflowError

    project = make_project(tmp_path / "p", {"update": {"compare_retrain": True}})
    drop_experience_file = project / "data" / "incoming" / "new.parquet"
    drop_experience_file.write_bytes(b"not read")
    with pytest.raises(ClflowError, match="update.compare_retrain.*commit dvc.lock"):
        load_flow(project, "continual", "continual_update")(project=str(project))
    assert drop_experience_file.exists() and not (project / "data" / "stream").exists()


def test_the_stream_gained_the_experience_and_lost_nothing(updated_project):
    project, _, before = updated_project
    train = pl.read_parquet(project / "data" / "stream" / "train.parquet")
    old = before["train"]
    assert train.head(old.height).equals(old)  # every earlier row, in order
    assert train["experience"].max() == 5 and (train["experience"] == 5).sum() > 0
    assert train.filter(pl.col("experience") == 5)["y"].is_in(list(range(10))).all()


def test_bad_file_is_moved_aside_with_its_reason(updated_project):
    project, result, _ = updated_project
    assert "label 42 outside 0..9" in result["rejected"]["bad.parquet"]
    rejected = project / "data" / "incoming" / "rejected"
    assert (rejected / "bad.parquet").exists()
    assert "field 'y'" in (rejected / "bad.parquet.reason.txt").read_text()
    assert not list((project / "data" / "incoming").glob("*.parquet"))


def test_only_bad_files_change_nothing(updated_project):
    project, _, _ = updated_project
    watched = ("data/stream", "data/experiences", "dvc.lock", "models/tame", "metrics")
    before = file_hashes(project, *watched)
    champion = registry(project).version("champion").version
    bad = drop_experience(project, "short.parquet", limit=50)
    x = np.stack(pl.read_parquet(bad)["x"].to_list())[:, :10]
    pl.DataFrame({"x": x.tolist(), "y": list(range(len(x)))}).write_parquet(bad)
    delivered(bad)  # a wrong feature length
    result = load_flow(project, "continual", "continual_update")(project=str(project))
    assert result["accepted"] == [] and result["stages"] == {}
    assert "feature length 10" in result["rejected"]["short.parquet"]
    assert file_hashes(project, *watched) == before
    assert registry(project).version("champion").version == champion


def test_a_failed_update_is_finished_by_the_next_run(tmp_path, built_project):
    """tame fails after intake accepted a file: the file stays owed and the next run (no new file)
    trains it."""
    from conftest import copy_project

    from clflow.ops.dvcrun import StageFailed
    from clflow.streams.intake import pending

    project = copy_project(built_project, tmp_path / "p")  # 5 experiences, trained
    stages = ["prepare", "embed_classes", "tame"]
    update = load_flow(project, "continual", "continual_update")
    drop_experience(project, "new.parquet", limit=300)
    ckpt = project / "models" / "tame" / "seed_0.pt"
    good = ckpt.read_bytes()
    ckpt.write_bytes(b"damaged")  # tame will stop with one line
    with pytest.raises(StageFailed, match="stage 'tame' failed"):
        update(project=str(project), stages=stages)
    assert pending(project) == [str(project / "data" / "experiences" / "0000-new.parquet")]
    ckpt.write_bytes(good)
    result = update(project=str(project), stages=stages)  # nothing new arrived
    assert result["accepted"] == [] and result["stages"]["tame"] == "ran"
    assert len(result["trained"]) == 1 and pending(project) == []
    tame = json.loads((project / "metrics" / "tame.json").read_text())
    assert (
        tame["resumed_from_experience"] == 5.0
    )  # continued from the repaired checkpoint onto the new rows
    runs_before = mlflow_runs(project)
    assert (
        update(project=str(project), stages=stages)["stages"] == {}
    )  # and now there is nothing owed: nothing runs, and MLflow gets no empty run
    assert mlflow_runs(project) == runs_before


def mlflow_runs(project) -> int:
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
    return len(client.search_runs([e.experiment_id for e in client.search_experiments()]))
