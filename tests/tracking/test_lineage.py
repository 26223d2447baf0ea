"""`clflow lineage` on real projects: the chain behind a registered version, both ways."""

from __future__ import annotations

import hashlib
import json

import pytest
from conftest import run

pytestmark = pytest.mark.slow


@pytest.fixture
def clflow(monkeypatch, capsys):
    """`clflow ARGS` in a project, in-process (the CLI's main; no interpreter start per call):
    returns (exit status, stdout, stderr)."""

    def call(project, *args) -> tuple[int, str, str]:
        from clflow.cli import main

        monkeypatch.chdir(project)
        try:
            main(list(args))
            status = 0
        except SystemExit as stop:
            status = int(stop.code or 0)
        out, err = capsys.readouterr()
        return status, out, err

    return call


def chain(clflow, project, ref: str) -> dict:
    status, out, _ = clflow(project, "lineage", ref, "--json")
    found = json.loads(out)
    assert status == 0 and len(found) == 1, found
    return found[0]


def prefect_run_of(project) -> str:
    """The id of the pipeline flow run that built `project`, from the Prefect API."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        runs = [r for r in client.read_flow_runs() if r.parameters.get("project") == str(project)]
    assert len(runs) == 1, runs
    return str(runs[0].id)


def test_the_champions_chain_names_every_link(built_api, clflow):
    project = built_api  # read only: the project its flow run names
    _, out, _ = clflow(project, "lineage", "models:/clflow-tame@champion")
    found = chain(clflow, project, "models:/clflow-tame@champion")
    register = json.loads((project / "metrics" / "register.json").read_text())
    assert found["version"] == str(register["version"]) and "champion" in found["aliases"]
    assert found["mlflow_run"]["stage"] == "register"
    # the Prefect flow run that ran the pipeline, as the Prefect API knows it
    assert found["prefect_flow_run"]["id"] == prefect_run_of(project)
    head = run(["git", "rev-parse", "HEAD"], project).stdout.strip()
    assert found["git_commit"] == head
    # the stream's DVC hash is the one dvc.lock holds for data/stream
    lock = (project / "dvc.lock").read_text()
    assert f"md5: {found['stream']['dvc_md5']}" in lock and found["stream"]["dvc_md5"]
    # dvc.lock as the pipeline run left it
    assert found["dvc_lock_after_run"] == hashlib.sha256(lock.encode()).hexdigest()[:16]
    assert found["experiences"] == []  # the built stream only
    assert found["decision"] == "promoted" and found["reason"] == "no champion yet"
    assert found["promoted_at"].startswith("20")
    for word in (
        "model",
        "mlflow run",
        "prefect run",
        "git commit",
        "dvc.lock",
        "data",
        "decision",
    ):
        assert any(line.startswith(word) for line in out.splitlines()), (word, out)
    # the same chain from the MLflow run id and from the Prefect flow-run id
    assert chain(clflow, project, found["mlflow_run"]["id"])["version"] == found["version"]
    assert chain(clflow, project, found["prefect_flow_run"]["id"])["version"] == found["version"]


def test_the_data_answers_which_versions_were_trained_on_it(updated_project, clflow):
    """Version 2 was trained on the accepted experience, version 1 before it arrived."""
    project, result, _ = updated_project
    accepted = project / "data" / "experiences" / "0000-rotated.parquet"
    v2 = chain(clflow, project, "models:/clflow-tame/2")
    [exp] = v2["experiences"]
    assert exp["name"] == accepted.name and exp["source"] == "rotated.parquet"
    assert exp["sha256"] == hashlib.sha256(accepted.read_bytes()).hexdigest()
    by_file = json.loads(clflow(project, "lineage", "--data", str(accepted), "--json")[1])
    assert [c["version"] for c in by_file] == ["2"]
    # the incoming file's own digest (as the intake saw it) finds it too, as does a prefix
    by_source = clflow(project, "lineage", "--data", exp["source_sha256"][:12])[1]
    assert by_source.startswith("models:/clflow-tame/2") and "0000-rotated.parquet" in by_source
    # the current stream (with the experience) made version 2; the first stream version 1
    by_stream = json.loads(clflow(project, "lineage", "--data", "data/stream", "--json")[1])
    assert [c["version"] for c in by_stream] == ["2"]
    v1 = chain(clflow, project, "models:/clflow-tame/1")
    assert v1["stream"]["dvc_md5"] != v2["stream"]["dvc_md5"]
    old = json.loads(clflow(project, "lineage", "--data", v1["stream"]["dvc_md5"], "--json")[1])
    assert [c["version"] for c in old] == ["1"]


@pytest.mark.parametrize(
    "args, words",
    [
        (["lineage", "models:/clflow-tame/99"], "models:/clflow-tame/99"),
        (["lineage", "0" * 32], "0" * 32),
        (["lineage", "12345678-1234-1234-1234-123456789abc"], "no MLflow run names"),
        (["lineage", "champion"], "expected models:/NAME@ALIAS"),
        (["lineage", "--data", "nothing-like-a-digest"], "neither a file nor a hex digest"),
        (["lineage"], "not both"),
    ],
)
def test_a_reference_that_names_nothing_is_one_line(built_project, clflow, args, words):
    status, _, err = clflow(built_project, *args)
    assert status == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and words in lines[0], err


def test_a_run_of_another_experiment_is_not_a_chain_of_question_marks(built_project, clflow):
    import mlflow

    from clflow.tracking.store import use_store

    use_store(f"sqlite:///{built_project / 'mlflow.db'}")
    mlflow.set_experiment("someone-elses")
    with mlflow.start_run() as run:
        mlflow.log_metric("loss", 1.0)
    status, out, err = clflow(built_project, "lineage", run.info.run_id)
    assert status == 2 and not out
    assert "not a clflow run (experiment 'someone-elses'" in err.strip().splitlines()[-1]
