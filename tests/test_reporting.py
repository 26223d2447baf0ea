import pytest

from clflow.reporting import method_rows, summary_table

M = {"avg_accuracy": 0.5, "forgetting": 0.1, "bwt": -0.1, "fwt": 0.0}


def test_rows_found_at_any_depth():
    metrics = {
        "tame": {**M, "n_experts": 5.0},
        "baselines": {"replay": M},
        "retrieval": {
            "augmented": {"finetune": {"alone": M, "with_retrieval": M}},
            "bank": {"size": 3},
        },
    }
    rows = [(s, p) for s, p, _ in method_rows(metrics)]
    assert rows == [
        ("tame", "tame"),
        ("baselines", "replay"),
        ("retrieval", "augmented/finetune/alone"),
        ("retrieval", "augmented/finetune/with_retrieval"),
    ]


def test_table_shows_std_when_present():
    table = summary_table({"b": {"m": {**M, "avg_accuracy_std": 0.02}}})
    assert "| b | m | 0.500 ± 0.020 | 0.100 |" in table


def test_report_fits_100_columns_with_one_block_per_stage():
    from clflow.reporting import report

    long = "retrieval_replay/nearest_other_class_and_then_some_more_words_to_be_long"
    metrics = {
        "tame": {**M, "avg_accuracy_std": 0.01, "n_experts": 5.0, "nonzero_parameters": 240439.0},
        "register": {"avg_accuracy": 0.95, "version": 3, "reason": "word " * 40},
        "retrieval": {"a": {long: M}, "bank": {"size": 1257, "index": "flat"}, "ids": [1, 2]},
    }
    text = report(metrics)
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 100
    assert [ln.split()[1] for ln in lines if ln.startswith("== ")] == list(metrics)
    assert "tame    0.500 ± 0.010" in text and "nonzero_parameters 240,439" in text
    # a stage without the four CL metrics still shows the ones it has
    assert "avg_accuracy 0.950" in text and "version 3" in text and "reason: word" in text
    assert "bank.size 1257" in text and "bank.index: flat" in text and "ids" not in text
    assert "…" in text  # the over-long method name is cut from the left, not wrapped


def test_clflow_report_reads_the_metrics_directory(tmp_path):
    import json

    from clflow.cli import main

    (tmp_path / "tame.json").write_text(json.dumps({**M, "n_experts": 2.0}))
    main(["report", "--metrics", str(tmp_path)])
    with pytest.raises(SystemExit) as stop:
        main(["report", "--metrics", str(tmp_path), "--stage", "nope"])
    assert stop.value.code == 2
    with pytest.raises(SystemExit):
        main(["report", "--metrics", str(tmp_path / "missing")])
