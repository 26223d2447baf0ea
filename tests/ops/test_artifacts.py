"""Helpers of the flows: DVC override arguments, the run's markdown report, the matrix table."""

from __future__ import annotations

import polars as pl

from clflow.ops.artifacts import matrix_table, mlflow_link, run_markdown
from clflow.ops.tasks import override_args


def test_override_args_pass_strings_as_given_and_dump_other_values_as_yaml():
    assert override_args({"train.epochs": "3", "train.seeds": [0, 1], "tame.detect": False}) == [
        "-S",
        "train.epochs=3",
        "-S",
        "train.seeds=[0, 1]",
        "-S",
        "tame.detect=false",
    ]


def test_markdown_names_stages_metrics_and_the_mlflow_run(monkeypatch):
    monkeypatch.setenv("CLFLOW_MLFLOW_UI", "http://127.0.0.1:5555/")
    link = mlflow_link({"CLFLOW_EXPERIMENT_ID": "7", "CLFLOW_PARENT_RUN_ID": "abc"})
    assert link == "http://127.0.0.1:5555/#/experiments/7/runs/abc?workflowType=machine_learning"
    metrics = {
        "tame": {"avg_accuracy": 0.9, "forgetting": 0.05, "bwt": -0.05, "fwt": 0.0},
        "register": {"avg_accuracy": 0.9, "forgetting": 0.05, "version": 2},
    }
    md = run_markdown("run", {"prepare": "cached", "tame": "ran"}, metrics, link)
    assert "| tame | ran |" in md and "| tame | tame | 0.900 |" in md and link in md
    assert "| register |" not in md  # not a continual-learning result row


def test_matrix_table_reads_the_csv_rows(tmp_path):
    path = tmp_path / "matrix.csv"
    pl.DataFrame(
        {"trained_through": [0, 1], "experience_0": [0.99, 0.51234], "experience_1": [None, 0.9]}
    ).write_csv(path)
    assert matrix_table(path) == [
        {"trained_through": 0, "experience_0": 0.99, "experience_1": None},
        {"trained_through": 1, "experience_0": 0.5123, "experience_1": 0.9},
    ]
    assert matrix_table(tmp_path / "missing.csv") == []
