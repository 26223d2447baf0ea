"""The pipeline flow: parameter overrides as DVC experiments, Prefect artifacts, retries, the
project lock."""

from __future__ import annotations

import json
import re
import sys

import pytest
from conftest import load_flow, make_project, run

pytestmark = pytest.mark.slow


def read_artifacts(key: str):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from prefect.client.schemas.sorting import ArtifactSort

    with get_client(sync_client=True) as client:
        return client.read_artifacts(  # the newest first: other tests' flows share the API
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])),
            sort=ArtifactSort.CREATED_DESC,
        )


def task_log_messages(task_name: str) -> list[str]:
    """Every log message of the newest task run of the task `task_name` (the Prefect API's)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterTaskRunId
    from prefect.client.schemas.sorting import TaskRunSort

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(sort=TaskRunSort.EXPECTED_START_TIME_DESC, limit=50)
        newest = next(r for r in runs if r.name.startswith(task_name))
        logs = client.read_logs(
            log_filter=LogFilter(task_run_id=LogFilterTaskRunId(any_=[newest.id]))
        )
    return [log.message for log in logs]


def test_overrides_run_as_a_tracked_dvc_experiment(tmp_path, prefect_api):
    project = make_project(tmp_path / "p", {"baselines": {"methods": ["replay"]}})
    pipeline = load_flow(project, "pipeline", "pipeline")
    params_before = (project / "params.yaml").read_bytes()
    metrics = pipeline(
        project=str(project),
        stages=["baselines"],
        overrides={"baselines.memory": 50},
        experiment="mem50",
    )
    assert set(metrics) == {"baselines"} and 0 < metrics["baselines"]["replay"]["avg_accuracy"] <= 1
    # the workspace is untouched; the experiment is in DVC with its params
    assert (project / "params.yaml").read_bytes() == params_before
    shown = json.loads(run([sys.executable, "-m", "dvc", "exp", "show", "--json"], project).stdout)
    exps = [e for rev in shown for e in (rev.get("experiments") or [])]
    assert any(e.get("name") == "mem50" for e in exps)
    # a markdown summary with the MLflow link and the (TAME) accuracy-matrix table
    md = read_artifacts("clflow-pipeline")
    assert md and "dvc exp run mem50" in md[0].data and "MLflow run:" in md[0].data
    # the experiment's stages stream their lines into the dvc-exp-run task's log as they run
    assert any(
        re.fullmatch(r"clflow\.progress: replay seed 0: [\d,]+ batches in \d+ s, [\d,]+ rows/s", m)
        for m in task_log_messages("dvc-exp-run")
    )
    # a second experiment; `dvc metrics diff` compares the two
    pipeline(
        project=str(project),
        stages=["baselines"],
        overrides={"baselines.memory": 150},
        experiment="mem150",
    )
    diff = run(
        [sys.executable, "-m", "dvc", "metrics", "diff", "mem50", "mem150", "--json"], project
    ).stdout
    diff = json.loads(diff)
    replay = diff["metrics/baselines.json"]["replay.avg_accuracy"]
    assert replay["old"] != replay["new"]


def test_a_typo_in_an_override_stops_before_running(tmp_path, prefect_api):
    from clflow.errors import ConfigError

    project = make_project(tmp_path / "p")
    with pytest.raises(ConfigError, match=r"baselines.memroy.*did you mean 'baselines.memory'"):
        load_flow(project, "pipeline", "pipeline")(
            project=str(project), overrides={"baselines.memroy": 5}
        )
    assert not (project / "dvc.lock").exists()


def test_a_second_run_waits_for_the_project_lock_then_stops_clearly(tmp_path, prefect_api):
    from clflow.util.locks import LockTimeout, project_lock

    project = make_project(tmp_path / "p")
    with project_lock(project, timeout=0):  # another run holds the project
        with pytest.raises(LockTimeout, match=r"run.lock: the project is held by another run"):
            load_flow(project, "pipeline", "pipeline")(
                project=str(project), stages=["prepare"], lock_timeout=1
            )
    assert not (project / "data" / "stream").exists()


def test_user_errors_are_not_retried_but_crashes_are():
    from prefect.states import Failed

    from clflow.ops.dvcrun import StageFailed
    from clflow.ops.tasks import _retryable

    user = StageFailed("stage 'prepare' failed:\nerror: x: field 'y': bad", retryable=False)
    crash = StageFailed("stage 'tame' failed: Killed", retryable=True)
    assert not _retryable(None, None, Failed(data=user))
    assert _retryable(None, None, Failed(data=crash))


def test_the_run_page_shows_each_stages_dvc_output_and_whether_it_ran(built_api):
    """The pipeline run that built the shared project: every stage task logs DVC's output at
    INFO to the Prefect API and ends in a state saying "ran N s" (or "cached")."""
    import re

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterId,
        LogFilter,
        LogFilterFlowRunId,
    )

    with get_client(sync_client=True) as client:
        runs = [
            r
            for r in client.read_flow_runs()
            if r.parameters.get("project") == str(built_api) and r.name
        ]
        assert runs, "the pipeline flow run that built the project is not in the API"
        run_id = runs[0].id
        tasks = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run_id]))
        )
        logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id])))
    stages = {t.name: t.state.message for t in tasks if t.name in ("prepare", "tame", "register")}
    assert set(stages) == {"prepare", "tame", "register"}
    assert all(re.fullmatch(r"ran \d+ s", m) for m in stages.values()), stages
    text = "\n".join(log.message for log in logs)
    assert "Running stage 'tame'" in text and "avg_accuracy" in text  # DVC's and the stage's own
    # streamed line by line as the stage prints them: DVC's start, the stage's progress (one
    # line per trained seed at least) and its summary are separate records, in that order
    tame_id = next(t.id for t in tasks if t.name == "tame")
    tame = sorted((r for r in logs if r.task_run_id == tame_id), key=lambda r: r.timestamp)
    first = lambda pattern: next(r for r in tame if re.search(pattern, r.message))  # noqa: E731
    start = first(r"Running stage 'tame'")
    progress = first(r"clflow\.progress: tame seed 0: [\d,]+ batches in \d+ s, [\d,]+ rows/s")
    summary = first(r"clflow\.tame: avg_accuracy")
    assert start.timestamp < progress.timestamp < summary.timestamp
    assert "avg_accuracy" not in start.message and "Running stage" not in summary.message
    with get_client(sync_client=True) as client:
        from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

        md = [
            a.data
            for a in client.read_artifacts(
                artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run_id]))
            )
            if a.type == "markdown"
        ]
    assert len(md) == 1
    registry = json.loads((built_api / "metrics" / "register.json").read_text())
    assert f"**Registry:** version {registry['version']}, alias `champion`: promoted" in md[0]
    assert "**Federated:** merged prototypes" in md[0]
