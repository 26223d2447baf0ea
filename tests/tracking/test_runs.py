"""What MLflow shows of a real pipeline run: a training experiment, curves, the data version,
real run times, a described registry version; a cached rerun adds no empty run."""

from __future__ import annotations

import pytest
import yaml
from conftest import copy_project, load_flow, until

pytestmark = pytest.mark.slow


def client_of(project):
    import mlflow

    uri = f"sqlite:///{project / 'mlflow.db'}"
    return mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)


def stage_runs(client, stage: str) -> list:
    """The runs of `stage` in the pipeline run that built the project (other tests add more)."""
    exp = client.get_experiment_by_name("clflow")
    [parent] = client.search_runs([exp.experiment_id], "tags.`clflow.stage` = 'pipeline'")
    if stage == "pipeline":
        return [parent]
    return client.search_runs(
        [exp.experiment_id],
        f"tags.`clflow.stage` = '{stage}' and tags.`mlflow.parentRunId` = '{parent.info.run_id}'",
    )


def test_the_experiment_is_model_training_with_curves_and_real_times(built_project):
    client = client_of(built_project)
    exp = client.get_experiment_by_name("clflow")
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"  # not GenAI
    [tame] = stage_runs(client, "tame")
    n_exp = len(client.get_metric_history(tame.info.run_id, "R.experience_0"))
    assert n_exp == 5  # R[i][0] after every experience i: a curve, not one number
    seen = client.get_metric_history(tame.info.run_id, "seen_accuracy")
    assert [m.step for m in seen] == list(range(5))
    assert seen[0].value == client.get_metric_history(tame.info.run_id, "R.experience_0")[0].value
    loss = client.get_metric_history(tame.info.run_id, "loss")
    assert len(loss) > 50 and [m.step for m in loss] == list(range(len(loss)))
    [base] = stage_runs(client, "baselines")
    assert len(client.get_metric_history(base.info.run_id, "replay.seen_accuracy")) == 5
    # the run spans the training, not only the logging after it (it was 34 ms)
    assert tame.info.end_time - tame.info.start_time > 2000


def test_runs_carry_the_data_version_and_the_prefect_flow_run(built_project):
    import yaml

    client = client_of(built_project)
    lock = yaml.safe_load((built_project / "dvc.lock").read_text())
    stream_md5 = next(o["md5"] for o in lock["stages"]["prepare"]["outs"])
    for stage in ("tame", "register", "baselines"):
        [run] = stage_runs(client, stage)
        [data] = run.inputs.dataset_inputs
        assert data.dataset.name == "data/stream" and data.dataset.digest == stream_md5
        assert run.data.tags["clflow.data.stream"] == stream_md5
        assert len(run.data.tags["clflow.prefect_flow_run_id"]) == 36


def test_the_registry_version_describes_the_decision_and_links_its_runs(built_api):
    client = client_of(built_api)  # the flow ran on a real Prefect server: its UI is linked
    [register] = stage_runs(client, "register")
    version = client.get_model_version_by_alias("clflow-tame", "champion")
    text = version.description
    assert "| experience | challenger | champion |" in text and "| 4 |" in text
    assert "**promoted**: no champion yet" in text
    assert f"/runs/{register.info.run_id}" in text
    url = register.data.tags["clflow.prefect_flow_run_url"]
    assert url.startswith("http://127.0.0.1:") and url in text  # the API's UI (never "None/")


def test_a_cached_rerun_links_the_run_that_made_the_results(built_project, tmp_path):
    """Every stage cached: no new MLflow run, and the artifact links the pipeline run that
    left this dvc.lock."""
    from prefect.client.orchestration import get_client

    project = copy_project(built_project, tmp_path / "project")
    client = client_of(project)
    exp = client.get_experiment_by_name("clflow")
    before = {r.info.run_id for r in client.search_runs([exp.experiment_id])}
    [parent] = stage_runs(client, "pipeline")
    load_flow(project, "pipeline", "pipeline")(project=str(project))
    after = {r.info.run_id for r in client.search_runs([exp.experiment_id], run_view_type=3)}
    assert after == before  # none made, none deleted
    with get_client(sync_client=True) as prefect:
        runs = [r for r in prefect.read_flow_runs() if r.parameters.get("project") == str(project)]
        from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

        [md] = [
            a.data
            for a in prefect.read_artifacts(
                artifact_filter=ArtifactFilter(
                    flow_run_id=ArtifactFilterFlowRunId(any_=[runs[0].id])
                )
            )
            if a.type == "markdown"
        ]
        from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

        # the flow's `dvc status` found them all up to date: no `dvc repro` was started to skip
        # one. Prefect sends logs in batches, after the run too: wait for them (up to 30 s).
        stages = len(yaml.safe_load((project / "dvc.yaml").read_text())["stages"])

        def skip_lines() -> list[str] | None:
            logs = prefect.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(
                any_=[runs[0].id])))  # fmt: skip
            found = [log.message for log in logs if "(dvc status: up to date)" in log.message]
            return found if len(found) >= stages else None

        skipped = until(skip_lines, 30)
    assert f"/runs/{parent.info.run_id}" in md and "Every stage was cached" in md
    assert "| tame | cached |" in md
    assert len(skipped) == stages, skipped
