"""Independent learners in forked processes or on a Dask cluster: the same results as in one
process, in order; a worker that dies has its job rerun."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import free_port

from clflow.baselines.methods import learner_for_method
from clflow.config import StreamConfig, TrainConfig
from clflow.errors import ClflowError
from clflow.evaluation import run_methods
from clflow.streams import build_stream
from clflow.util import parallel
from clflow.util.parallel import Cluster, run_parallel, using_cluster
from clflow.util.services import ServiceUnavailable


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


@pytest.mark.slow  # a Dask LocalCluster: scheduler and worker processes
def test_dask_gives_the_bytes_local_gives(stream, monkeypatch):
    """`train.runner: dask` on a LocalCluster of 2 one-thread workers: the same numbers."""
    train = TrainConfig(seeds=[0, 1], epochs=1)
    makers = {"replay": lambda seed: learner_for_method("replay", stream, train, seed, 50)}
    monkeypatch.setenv(parallel.WORKERS_ENV, "1")
    here = run_methods(makers, stream, train, keep_proba=True)
    monkeypatch.setenv(parallel.WORKERS_ENV, "2")
    with using_cluster(Cluster("dask")):
        remote = run_methods(makers, stream, train, keep_proba=True)
    for (la, ra), (lb, rb) in zip(here["replay"], remote["replay"]):
        np.testing.assert_array_equal(ra.R, rb.R)
        np.testing.assert_array_equal(ra.proba, rb.proba)
        np.testing.assert_array_equal(la.predict(stream.test.X), lb.predict(stream.test.X))


def slow_square(i: int, marks: Path) -> int:
    """A job that says where it runs (a file named after its index and its worker's pid), and
    logs a progress line."""
    (marks / f"{i}.{os.getpid()}").touch()
    logging.getLogger("clflow.progress").info("square %d on pid %d", i, os.getpid())
    time.sleep(4 if i == 0 else 0.5)
    return i * i


@pytest.mark.slow  # a Dask LocalCluster, one worker killed
def test_a_worker_killed_mid_job_has_its_job_rerun_elsewhere(tmp_path, caplog):
    import cloudpickle
    from distributed import LocalCluster

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import tests/
    jobs = [lambda i=i: slow_square(i, tmp_path) for i in range(6)]

    def kill_the_first_job_s_worker():
        deadline = time.monotonic() + 120
        while not list(tmp_path.glob("0.*")) and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(int(next(tmp_path.glob("0.*")).suffix[1:]), signal.SIGKILL)

    with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None) as cluster:
        killer = threading.Thread(target=kill_the_first_job_s_worker)
        killer.start()
        caplog.set_level(logging.INFO, logger="clflow")
        with using_cluster(Cluster("dask", cluster.scheduler_address)):
            assert run_parallel(jobs, "squares") == [i * i for i in range(6)]
        killer.join()
    assert len(list(tmp_path.glob("0.*"))) == 2  # job 0 started twice, on two worker processes
    # the jobs' own log lines came back from the workers into this process's log
    lines = {r.getMessage().split(" on pid")[0] for r in caplog.records}
    assert {f"square {i}" for i in range(6)} <= lines


def test_an_unreachable_scheduler_is_one_line_naming_train_address(monkeypatch):
    monkeypatch.setenv("CLFLOW_SERVICE_TIMEOUT", "1")
    address = f"tcp://127.0.0.1:{free_port()}"
    with pytest.raises(ServiceUnavailable) as err:
        with using_cluster(Cluster("dask", address)):
            pytest.fail("nothing runs")
    line = err.value.line()
    assert line.startswith(f"{address}: field 'train.address': the Dask scheduler did not answer")
    assert "\n" not in line
