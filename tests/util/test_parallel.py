"""Independent learners in forked processes: same results as in one process, in order."""

from __future__ import annotations

import numpy as np
import pytest

from clflow.baselines.methods import learner_for_method
from clflow.config import StreamConfig, TrainConfig
from clflow.errors import ClflowError
from clflow.evaluation import run_methods
from clflow.streams import build_stream
from clflow.util import parallel
from clflow.util.parallel import run_parallel


@pytest.fixture(scope="module")
def stream():
    return build_stream(StreamConfig(source="digits", experiences=3, limit=600))


def test_results_in_order_and_errors_raised_here():
    jobs = [lambda i=i: i * i for i in range(5)]
    assert run_parallel(jobs, "squares", workers=2) == [0, 1, 4, 9, 16]

    def bad():
        raise ClflowError("bad row", file="x.parquet", field="y")

    with pytest.raises(ClflowError, match="x.parquet: field 'y': bad row"):
        run_parallel([lambda: 1, bad], "jobs", workers=2)


def test_learners_train_the_same_in_workers_as_here(stream, monkeypatch):
    """One torch thread per learner: the worker count changes the wall time, not the numbers."""
    train = TrainConfig(seeds=[0, 1], epochs=1)
    makers = {
        m: lambda seed, m=m: learner_for_method(m, stream, train, seed, 50)
        for m in ("finetune", "replay")
    }
    monkeypatch.setenv(parallel.WORKERS_ENV, "1")
    here = run_methods(makers, stream, train, keep_proba=True)
    monkeypatch.setenv(parallel.WORKERS_ENV, "2")
    forked = run_methods(makers, stream, train, keep_proba=True)
    for m in makers:
        for (la, ra), (lb, rb) in zip(here[m], forked[m]):
            assert ra.proba.shape == (4, len(stream.test.y), len(stream.classes))
            np.testing.assert_array_equal(ra.R, rb.R)
            np.testing.assert_array_equal(ra.proba, rb.proba)
            np.testing.assert_array_equal(la.predict(stream.test.X), lb.predict(stream.test.X))


def test_workers_follow_the_setting_and_the_free_cpus(monkeypatch):
    monkeypatch.setenv(parallel.WORKERS_ENV, "3")
    assert parallel.workers_for(10) == 3 and parallel.workers_for(2) == 2
    monkeypatch.setenv(parallel.WORKERS_ENV, "")
    monkeypatch.setattr(parallel, "busy_cpus", lambda: 5)  # a machine busy with other work
    assert parallel.workers_for(10) == 1
    monkeypatch.setattr(parallel, "busy_cpus", lambda: 0)
    assert parallel.workers_for(10) == parallel.cpu_budget()
