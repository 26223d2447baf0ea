"""The real pipeline: `dvc repro` in a temporary copy of the project, a real MLflow store, a Prefect
flow run."""

from __future__ import annotations

import json
import re
import sys

import pytest
from conftest import load_flow, make_project, run

pytestmark = pytest.mark.slow


def dvc(project, *args, check=True):
    return run([sys.executable, "-m", "dvc", *args], project, check=check)


def test_repro_writes_metrics_and_forgetting_is_visible(built_project):
    metrics = json.loads((built_project / "metrics" / "baselines.json").read_text())
    bounded = {"replay", "replay_online", "er_ace", "derpp", "gdumb"}
    assert set(metrics) == {"finetune", *bounded, "joint"}
    for method, vals in metrics.items():
        assert {"avg_accuracy", "forgetting", "bwt", "fwt", "memory_rows"} <= set(vals)
        # every bounded method holds the memory it is given, no more (DER++ also its logits)
        assert vals["memory_rows"] == (200 if method in bounded else 0)
    assert metrics["derpp"]["memory_bytes"] == metrics["er_ace"]["memory_bytes"] + 200 * 10 * 4
    # catastrophic forgetting on Split-Digits: finetune far below joint, replay in between
    assert metrics["finetune"]["avg_accuracy"] < metrics["joint"]["avg_accuracy"] - 0.3
    assert (
        metrics["finetune"]["avg_accuracy"]
        < metrics["replay"]["avg_accuracy"]
        < metrics["joint"]["avg_accuracy"]
    )
    assert metrics["finetune"]["forgetting"] > metrics["replay"]["forgetting"]
    for name in ("accuracy.png", "accuracy.csv", "matrix_finetune.png"):
        assert (built_project / "plots" / "baselines" / name).stat().st_size > 0


def test_repro_writes_tame_outputs(built_project):
    tame = json.loads((built_project / "metrics" / "tame.json").read_text())
    for key in (
        "avg_accuracy",
        "forgetting",
        "bwt",
        "fwt",
        "n_experts",
        "detection_precision",
        "detection_recall",
        "detection_f1",
        "detection_delay",
        "false_alarms",
        "selector_accuracy",
        "oracle_avg_accuracy",
    ):
        assert key in tame and f"{key}_std" in tame
    assert (built_project / "models" / "tame" / "seed_0.pt").stat().st_size > 0
    for name in ("loss.png", "matrix.png", "loss.csv"):
        assert (built_project / "plots" / "tame" / name).stat().st_size > 0


def test_recurring_mnist1d_stream_runs_through_dvc(tmp_path, built_project):
    """A recurring task's test rows appear under each of its experiences: the stream loads, the
    stages run, and meta.json records the duplicate counts and the normalizer."""
    from conftest import copy_project, update_params

    # a copy of the built project: MNIST-1D's classes are the digits', so their targets stay
    project = copy_project(built_project, tmp_path / "recurring")
    update_params(
        project,
        {
            "stream": {
                "source": "permuted_mnist1d",
                "experiences": 3,
                "tasks": [0, 1, 0, 2, 1],
                "limit": 1200,
            },
            "baselines": {"methods": ["replay", "replay_online"], "memory": 100},
            # and the federated clients share the encoder trained on the base experiences, as
            # SuperNodes of a loopback Flower deployment
            "federated": {"encoder": "trained", "clients": 2, "engine": "flower"},
        },
    )
    dvc(project, "repro", "baselines", "tame", "federated")
    import hashlib

    import polars as pl

    encoder_id = hashlib.sha256((project / "models/encoder/encoder.npz").read_bytes()).hexdigest()
    protos = pl.read_parquet(project / "models" / "federated" / "prototypes.parquet")
    assert set(protos["encoder_hash"]) == {encoder_id[:16]}
    assert len(protos["prototype"][0]) == 64  # encoder_dim, not the 40 raw features
    fed = json.loads((project / "metrics" / "federated.json").read_text())
    assert fed["rejected_updates"] == 0 and 0 < fed["novel_accuracy"] <= 1
    # Flower merged what the in-process path merges, and the central prototypes
    assert fed["engine"] == "flower" and fed["flower"]["max_diff_vs_in_process"] <= 1e-6
    assert fed["max_prototype_diff"] <= 1e-6
    assert len(fed["flower"]["round_seconds"]) == len(fed["rounds"]) == 5
    logs = project / ".clflow/flower/logs"
    assert len(list(logs.glob("supernode-*.log"))) == 2
    assert "[ROUND 5/5]" in (logs / "serverapp.log").read_text()
    meta = json.loads((project / "data" / "stream" / "meta.json").read_text())
    assert meta["duplicates"] == {
        "train": 0,
        "test": 0,
        "test_in_train": 0,
        "policy": "keep",
        "dropped": 0,
    }
    assert meta["normalize"]["kind"] == "standard" and len(meta["normalize"]["mean"]) == 40
    base = json.loads((project / "metrics" / "baselines.json").read_text())
    assert set(base) == {"replay", "replay_online"}
    tame = json.loads((project / "metrics" / "tame.json").read_text())
    assert (
        tame["n_experts"] <= 4 and 0 < tame["avg_accuracy"] <= 1
    )  # three tasks, a recurring one reused
    # the policy is a parameter: refusing duplicates stops prepare with one line and keeps the
    # stream
    from conftest import file_hashes, update_params

    before = file_hashes(project, "data/stream")
    update_params(
        project,
        {"stream": {"duplicates": "error", "source": "parquet", "path": str(project / "dup")}},
    )
    import shutil

    import polars as pl

    shutil.copytree(project / "data" / "stream", project / "dup")
    train = pl.read_parquet(project / "dup" / "train.parquet")
    pl.concat([train, train.head(3)]).write_parquet(project / "dup" / "train.parquet")
    proc = dvc(project, "repro", "prepare", check=False)
    assert proc.returncode != 0
    assert (
        "stream.duplicates" in proc.stderr + proc.stdout
        and "3 duplicate rows" in proc.stderr + proc.stdout
    )
    assert file_hashes(project, "data/stream") == before


def test_second_repro_has_nothing_to_do(built_project):
    # where Python may write bytecode (its default), importing the library leaves __pycache__/ in
    # the directory dependencies (src/clflow/lingo, src/clflow/retrieval): not a change
    import compileall
    import shutil

    src = built_project / "src"
    assert compileall.compile_dir(src, quiet=1)
    try:
        assert list((src / "clflow" / "lingo").glob("__pycache__/*.pyc"))
        out = dvc(built_project, "repro").stdout
        assert "Data and pipelines are up to date" in out
        status = dvc(built_project, "status").stdout
        assert "up to date" in status
    finally:  # the worker's other tests get the project as it was built
        for cache in list(src.rglob("__pycache__")):
            shutil.rmtree(cache)


def test_changed_param_reruns_only_downstream(built_project, tmp_path):
    from conftest import copy_project, update_params

    project = copy_project(built_project, tmp_path / "p")
    update_params(project, {"baselines": {"methods": ["finetune", "joint"]}})  # baselines reads it
    proc = dvc(project, "repro")
    out = proc.stdout
    assert "Stage 'prepare' didn't change" in out and "Running stage 'baselines'" in out
    # the stage's progress reaches `dvc repro`'s output: a line for each trained run at least
    seen = proc.stdout + proc.stderr
    for method in ("finetune", "joint"):
        assert re.search(rf"clflow\.progress: {method} seed 0: [\d,]+ batches in \d+ s", seen)
    assert "Stage 'tame' didn't change" in out and "Running stage 'lingo'" not in out
    assert set(json.loads((project / "metrics" / "baselines.json").read_text())) == {
        "finetune",
        "joint",
    }


def test_mlflow_holds_the_runs_with_tags(built_project):
    import mlflow

    from clflow.tracking.store import use_store

    uri = f"sqlite:///{built_project / 'mlflow.db'}"
    use_store(uri)
    client = mlflow.MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("clflow")
    runs = client.search_runs([exp.experiment_id])
    stages = {r.data.tags["clflow.stage"] for r in runs}
    assert {"prepare", "baselines"} <= stages
    base = next(
        r
        for r in runs
        if r.data.tags["clflow.stage"] == "baselines" and r.data.params["baselines.memory"] == "200"
    )
    assert 0 <= base.data.metrics["replay.avg_accuracy"] <= 1
    assert len(base.data.tags["mlflow.source.git.commit"]) == 40
    assert base.data.tags["clflow.dvc_lock"] != ""
    models = client.search_logged_models([exp.experiment_id])
    assert {m.name for m in models} >= {"finetune", "replay", "joint"}
    replay = next(m for m in models if m.name == "replay")
    # each method's model carries its own numbers, not the other methods' (nor their curves)
    linked = {metric.key for metric in replay.metrics}
    assert "replay.avg_accuracy" in linked
    assert not [key for key in linked if key.split(".")[0] in {m.name for m in models} - {"replay"}]
    # the logged model loads and predicts
    model = mlflow.pytorch.load_model(f"models:/{replay.model_id}")
    assert model is not None


def test_prefect_flow_runs_stages_through_dvc(built_project):
    project = built_project  # built by the pipeline flow
    metrics = json.loads((project / "metrics" / "baselines.json").read_text())
    assert metrics["joint"]["avg_accuracy"] > 0.8
    # the flow went through DVC: the lock records both stages and a plain repro has nothing to do
    lock = (project / "dvc.lock").read_text()
    assert "prepare:" in lock and "baselines:" in lock
    assert "Data and pipelines are up to date" in dvc(project, "repro").stdout
    # stage runs are children of the flow's parent MLflow run
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("clflow").experiment_id])
    parent = next(r for r in runs if r.data.tags["clflow.stage"] == "pipeline")
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    from clflow.ops.dvcrun import stage_names

    assert {r.data.tags["clflow.stage"] for r in children} == set(stage_names(project))
    assert len({r.data.tags["clflow.pipeline_run"] for r in children + [parent]}) == 1


def test_use_store_leaves_the_environment_alone(monkeypatch, tmp_path):
    import mlflow

    from clflow.tracking.store import tracking_uri, use_store

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    use_store(f"sqlite:///{tmp_path / 'a.db'}")
    assert mlflow.get_tracking_uri().endswith("a.db")
    assert tracking_uri(tmp_path / "b") == f"sqlite:///{tmp_path / 'b' / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    use_store(f"sqlite:///{tmp_path / 'a.db'}")
    assert tracking_uri(tmp_path) == "http://127.0.0.1:5000"


def test_flow_surfaces_the_stage_error(tmp_path, prefect_api):
    from clflow.ops.dvcrun import StageFailed

    missing = tmp_path / "no-such-stream"
    project = make_project(
        tmp_path / "bad", {"stream": {"source": "parquet", "path": str(missing)}}
    )
    with pytest.raises(
        StageFailed,
        match=rf"stage 'prepare' failed \(exit \d+\):\nerror: {missing}: stream directory",
    ):
        load_flow(project, "pipeline", "pipeline")(project=str(project))


def test_flow_rejects_a_params_typo_before_running(tmp_path, prefect_api):
    from clflow.errors import ConfigError

    project = make_project(tmp_path / "typo")
    (project / "params.yaml").write_text(
        (project / "params.yaml").read_text().replace("memory:", "memroy:")
    )
    with pytest.raises(ConfigError, match=r"baselines.memroy.*did you mean 'baselines.memory'"):
        load_flow(project, "pipeline", "pipeline")(project=str(project))
    assert not (project / "dvc.lock").exists()


def test_repro_writes_retrieval_outputs(built_project):
    from clflow.retrieval import DemoBank

    m = json.loads((built_project / "metrics" / "retrieval.json").read_text())
    for method in ("finetune", "replay"):
        assert {"alone", "with_retrieval"} == set(m["augmented"][method])
    assert set(m["retrieval_replay"]) == {"random", "nearest", "nearest_other_class"}
    # the model-alone rows are the baselines' own runs (their kept predictions), not a retrain
    base = json.loads((built_project / "metrics" / "baselines.json").read_text())
    scores = lambda method: {k: v for k, v in base[method].items() if "memory" not in k}  # noqa: E731
    assert m["augmented"]["finetune"]["alone"] == scores("finetune")
    assert m["augmented"]["replay"]["alone"] == scores("replay")
    assert m["retrieval_replay"]["random"] == scores("replay_online")
    assert "5shot_episode_accuracy" in m["fewshot"]
    bank = DemoBank.load(built_project / "models" / "retrieval" / "bank")
    assert len(bank) == m["bank"]["size"] > 0
    assert set(bank.meta.columns) >= {"id", "label", "experience", "row"}


def test_repro_writes_lingo_outputs(built_project):
    import polars as pl

    targets = pl.read_parquet(built_project / "data" / "class_targets.parquet")
    assert (
        targets["name"].to_list()[:2] == ["zero", "one"]
        and targets["prompt"][0] == "the handwritten digit zero"
    )
    m = json.loads((built_project / "metrics" / "lingo.json").read_text())
    assert set(m) == {"finetune", "replay"} and set(m["replay"]) == {"linear", "random", "language"}
    assert (built_project / "plots" / "lingo" / "replay.png").stat().st_size > 0


def test_repro_writes_federated_outputs(built_project):
    import polars as pl

    m = json.loads((built_project / "metrics" / "federated.json").read_text())
    assert (
        m["max_prototype_diff"] <= 1e-5
        and abs(m["merged_accuracy"] - m["central_accuracy"]) <= 0.005
    )
    assert m["merged_accuracy"] > m["local_only_accuracy_mean"] and m["rejected_updates"] == 0
    assert len(m["rounds"]) == 5
    protos = pl.read_parquet(built_project / "models" / "federated" / "prototypes.parquet")
    assert protos["label"].to_list() == list(range(10)) and protos["count"].sum() > 0


def test_logged_tame_model_predicts_like_the_checkpoint(built_project):
    import mlflow
    import numpy as np

    from clflow.streams import load_stream
    from clflow.tame.persist import load_tame
    from clflow.tracking.store import use_store

    use_store(f"sqlite:///{built_project / 'mlflow.db'}")
    client = mlflow.MlflowClient()
    exp = client.get_experiment_by_name("clflow")
    model = next(m for m in client.search_logged_models([exp.experiment_id]) if m.name == "tame")
    served = mlflow.pyfunc.load_model(f"models:/{model.model_id}")
    X = load_stream(built_project / "data" / "stream").test.X[:50]
    local, _ = load_tame(built_project / "models" / "tame" / "seed_0.pt")
    out = served.predict(X)
    assert np.array_equal(out["label"].to_numpy(), local.predict(X))
    assert set(out.columns) == {"label", "class_name", "expert", "confidence"}
    experts, confidence = local.route_confidence(X)  # what serving records for drift
    assert np.array_equal(out["expert"].to_numpy(), experts)
    assert np.allclose(out["confidence"].to_numpy(), confidence) and (confidence <= 1).all()
    # the logged requirements name every package its code imports (a virtualenv or container can
    # serve it)
    from pathlib import Path

    reqs = Path(mlflow.pyfunc.get_model_dependencies(f"models:/{model.model_id}")).read_text()
    for package in ("torch==", "numpy==", "mlflow==", "polars==", "pandas=="):
        assert package in reqs, reqs
    # and nothing the model's code does not import: params.yaml's schema is not model code
    assert "pydantic" not in reqs and "PyYAML" not in reqs, reqs


def test_dvc_plots_show_renders_loss_and_heatmaps(built_project, tmp_path):
    out = tmp_path / "plots"
    dvc(built_project, "plots", "show", "-o", str(out))
    html = (out / "index.html").read_text()
    for image in ("loss.png", "matrix.png", "matrix_finetune.png"):
        assert image in html
    # the CSV plots as dvc.yaml defines them at the top level (x, y, title)
    assert "Accuracy on seen experiences" in html and "TAME training loss per batch" in html
    # each plot once: not both as a top-level definition and as a file of a stage's plots dir
    shown = json.loads(dvc(built_project, "plots", "show", "--json").stdout)["data"]
    files = [key.removeprefix("dvc.yaml::") for key in shown]
    assert len(files) == len(set(files)), files
    assert {"plots/tame/loss.csv", "plots/baselines/accuracy.png"} <= set(files)


def test_the_same_inputs_give_byte_identical_models(built_project, tmp_path):
    """DVC sees an unchanged model as unchanged: a fresh run writes the same checkpoint bytes."""
    out = tmp_path / "models"
    run(
        [
            sys.executable,
            "stages/tame.py",
            "--models",
            str(out),
            "--metrics",
            str(tmp_path / "m.json"),
            "--plots",
            str(tmp_path / "plots"),
        ],
        built_project,
    )
    for ckpt in (built_project / "models" / "tame").glob("*.pt"):
        assert (out / ckpt.name).read_bytes() == ckpt.read_bytes(), ckpt.name
    assert (tmp_path / "m.json").read_text() == (
        built_project / "metrics" / "tame.json"
    ).read_text()
