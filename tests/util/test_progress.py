"""Progress of long loops: log lines off a terminal, nested shares, MLflow's `progress`."""

from __future__ import annotations

import logging
import re

import pytest

from clflow.util import progress as progress_mod
from clflow.util.progress import Progress


def lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "clflow.progress"]


def test_off_a_terminal_a_line_per_interval_with_rate_and_eta(caplog):
    caplog.set_level(logging.INFO, logger="clflow.progress")
    with Progress(4, "finetune seed 0", every=0) as p:  # every=0: a line at every step
        for _ in range(4):
            p.update(1, rows=32)
    got = lines(caplog)
    assert len(got) == 5  # four steps and the closing line
    assert re.fullmatch(r"finetune seed 0:  25% 1/4 batches, [\d,]+ rows/s, ETA \d+ s", got[0])
    assert re.fullmatch(r"finetune seed 0: 4 batches in \d+ s, [\d,]+ rows/s", got[-1])


def test_no_line_before_the_interval_only_the_closing_one(caplog):
    caplog.set_level(logging.INFO, logger="clflow.progress")
    with Progress(1000, "tame seed 1", every=3600) as p:
        for _ in range(1000):
            p.update(1)
    assert lines(caplog) == [lines(caplog)[0]] and "1,000 batches in" in lines(caplog)[0]
    with Progress(3, "selector", unit="epochs", every=3600, summary=False) as p:
        p.update(3)
    assert len(lines(caplog)) == 1  # a loop that runs often has no closing line


def test_nested_loops_move_the_outer_share(caplog):
    caplog.set_level(logging.INFO, logger="clflow.progress")
    with Progress(2, "baselines", unit="runs", every=3600) as outer:
        outer.update(1)
        with Progress(4, "joint seed 1", every=0) as inner:
            inner.update(2)
            assert outer.fraction() == pytest.approx(0.75)  # one run done, half of the next
            inner.update(1)
        outer.update(1)
        assert outer.fraction() == 1.0
    inner_lines = [ln for ln in lines(caplog) if ln.startswith("joint seed 1:  ")]
    assert inner_lines[0].endswith("baselines 75%, ETA " + inner_lines[0].rsplit("ETA ", 1)[1])


def test_a_live_mlflow_run_gets_the_progress_metric(tmp_path, monkeypatch):
    import mlflow

    monkeypatch.setattr(progress_mod, "_detached", False)
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    try:
        # an experiment of its own: another test in this process may have set an active one
        with mlflow.start_run(experiment_id=mlflow.create_experiment("progress")) as run:
            with Progress(2, "tame", unit="seeds", every=0) as outer:
                for _ in range(2):
                    with Progress(3, "seed", every=0) as inner:
                        for _ in range(3):
                            inner.update(1)
                    outer.update(1)
        history = mlflow.MlflowClient().get_metric_history(run.info.run_id, "progress")
    finally:
        mlflow.set_tracking_uri(None)
    values = [m.value for m in sorted(history, key=lambda m: m.step)]
    assert len(values) >= 6 and values == sorted(values) and values[-1] == 1.0
    assert 0 < values[0] < 0.5  # the first batch of the first seed already moves it


def test_a_bad_interval_setting_falls_back_to_the_default(monkeypatch):
    monkeypatch.setenv("CLFLOW_PROGRESS_SECONDS", "soon")
    assert progress_mod.report_every() == progress_mod.DEFAULT_EVERY
    monkeypatch.setenv("CLFLOW_PROGRESS_SECONDS", "2.5")
    assert progress_mod.report_every() == 2.5
