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
