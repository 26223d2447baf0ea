"""CPU budget and parallel runs of independent learners.

Every learner trains with one torch thread. On the default MLP (batch 32) a second thread buys
1.25x for 2x the CPU, and on a shared machine idle OpenMP threads spin for cores they do not
get (4.3x the CPU for the same work, measured with four jobs on two cores). Results also
depend on the thread count (different summation order), so one thread everywhere keeps them
bit-identical across machines and loads. The cores are used instead by training independent
learners (seeds, methods) in forked processes, as many at once as there are CPUs free.

`CLFLOW_WORKERS` sets the number of processes (1 = everything in this process).

`train.runner: dask` hands the same jobs to a Dask cluster instead (`using_cluster`, set by the
stage for its whole run): a `LocalCluster` of one-thread worker processes sized to the free CPUs,
or the scheduler at `train.address`. Each job runs with one thread there too, so its results are
the bytes `local` gives; a worker that dies mid-job has its job rerun on another worker (Dask's
scheduler does this). Workers on other machines need clflow installed, the project at the same
path (TAME's jobs write their checkpoints there) and clflow's settings:
`dask worker ADDRESS --nthreads 1 --preload clflow.ops.quiet`.
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TypeVar

from clflow.util.progress import Progress, detach

T = TypeVar("T")
log = logging.getLogger("clflow.parallel")
WORKERS_ENV = "CLFLOW_WORKERS"
Runner = Literal["local", "dask"]


@dataclass(frozen=True)
class Cluster:
    """Where independent jobs run: forked local processes, or a Dask cluster (`address` empty:
    a LocalCluster made for the call)."""

    runner: Runner = "local"
    address: str = ""
    field: str = "train.address"  # what a scheduler that does not answer is named by


_CLUSTER = Cluster()


@contextmanager
def using_cluster(cluster: Cluster) -> Iterator[None]:
    """Run every `run_parallel` of this block on `cluster` (a stage sets it for its run)."""
    global _CLUSTER
    if cluster.runner == "dask" and cluster.address:
        from clflow.util.services import ServiceUnavailable, default_timeout, wait_for_port

        try:  # before any work: the outs stay as they were
            wait_for_port(cluster.address, default_timeout(), "the Dask scheduler")
        except ServiceUnavailable as exc:
            raise ServiceUnavailable(
                exc.message, file=cluster.address, field=cluster.field
            ) from None
    saved, _CLUSTER = _CLUSTER, cluster
    try:
        yield
    finally:
        _CLUSTER = saved


def cpu_budget() -> int:
    """CPUs this process may run on: its affinity mask, capped by a cgroup CPU quota."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cpus = cpus or 1
    try:  # cgroup v2: "max 100000" or "<quota> <period>"
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            cpus = min(cpus, max(1, math.floor(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return cpus


def busy_cpus() -> int:
    """Runnable tasks on the machine other than this one, right now (/proc/loadavg's 4th field;
    the 1-minute load average lags a job that just started by a minute)."""
    try:
        running = int(Path("/proc/loadavg").read_text().split()[3].split("/")[0])
    except (OSError, ValueError, IndexError):
        return 0
    return max(0, running - 1)


def free_cpus() -> int:
    """CPUs of the budget that other work is not using now (at least 1)."""
    return max(1, cpu_budget() - busy_cpus())


def workers_for(jobs: int) -> int:
    """Processes for `jobs` independent runs: CLFLOW_WORKERS, else the CPUs free now."""
    text = os.environ.get(WORKERS_ENV, "").strip()
    wanted = int(text) if text.isdigit() and int(text) > 0 else free_cpus()
    return max(1, min(wanted, jobs))


def one_thread() -> None:
    """Torch on one intra-op thread in this process (see the module docstring)."""
    import torch

    if torch.get_num_threads() != 1:
        torch.set_num_threads(1)


_JOBS: Sequence[Callable[[], object]] = ()


def _run(i: int) -> tuple[int, object]:
    return i, _JOBS[i]()


def _child() -> None:
    detach()  # progress lines yes; the parent's MLflow run and progress stack no
    one_thread()
    # numpy's BLAS and FAISS's OpenMP too: two workers with two spinning BLAS threads each ran a
    # retrieval-replay step 4.5x slower than one process alone (13.6 vs 3 ms, Fashion-MNIST)
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)


def run_parallel(
    jobs: Sequence[Callable[[], T]], desc: str, unit: str = "runs", workers: int | None = None
) -> list[T]:
    """Results of zero-argument `jobs`, in order; run in forked processes when more than one
    CPU is free (closures need no pickling: the children inherit them), else here.

    A job's exception is raised here. Results travel back by pickle (learners included).
    Jobs run longest-first is the caller's choice: they are started in the order given.
    """
    global _JOBS
    one_thread()
    if _CLUSTER.runner == "dask" and jobs:
        return _run_dask(jobs, desc, unit, _CLUSTER.address, workers)
    n = workers if workers is not None else workers_for(len(jobs))
    results: dict[int, T] = {}
    with Progress(len(jobs), desc, unit=unit) as progress:
        if n <= 1 or len(jobs) <= 1:
            from threadpoolctl import threadpool_limits

            with threadpool_limits(1):  # one CPU free: the learners' numbers as in a worker
                for i, job in enumerate(jobs):
                    results[i] = job()
                    progress.update(1)
        else:
            log.info("%s: %d %s in %d processes", desc, len(jobs), unit, n)
            _JOBS = jobs
            try:
                ctx = multiprocessing.get_context("fork")
                with ctx.Pool(n, initializer=_child) as pool:
                    for i, result in pool.imap_unordered(_run, range(len(jobs))):
                        results[i] = result  # type: ignore[assignment]
                        progress.update(1)
            finally:
                _JOBS = ()
    return [results[i] for i in range(len(jobs))]


def _on_worker(job: Callable[[], T], level: int) -> T:
    """A job on a Dask worker, with one thread everywhere as in a forked child; its clflow log
    lines (progress) at the stage's `level`, which the client forwards to the stage's log."""
    _child()  # idempotent: a worker process runs many jobs
    logging.getLogger("clflow").setLevel(level)
    return job()


def _run_dask(
    jobs: Sequence[Callable[[], T]], desc: str, unit: str, address: str, workers: int | None
) -> list[T]:
    """`run_parallel` on a Dask cluster: the scheduler at `address`, else a LocalCluster of
    one-thread worker processes (as many as CPUs are free, or `workers`). Jobs travel by
    cloudpickle (closures included); their results come back by pickle, in order."""
    from distributed import Client, LocalCluster, as_completed

    cluster = None
    if not address:
        n = workers if workers is not None else workers_for(len(jobs))
        # no dashboard, and no "Starting worker" INFO lines in the stage's log
        cluster = LocalCluster(
            n_workers=n,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            silence_logs=logging.WARNING,
        )
    results: dict[int, T] = {}
    try:
        with Client(address or cluster) as client:
            log.info("%s: %d %s on Dask (%s)", desc, len(jobs), unit, client.scheduler.address)
            # each job's progress lines, from whichever machine runs it, into this stage's log
            level = logging.getLogger("clflow.progress").getEffectiveLevel()
            client.forward_logging("clflow", level=level)
            futures = {
                client.submit(_on_worker, job, level, pure=False): i for i, job in enumerate(jobs)
            }
            with Progress(len(jobs), desc, unit=unit) as progress:
                for future in as_completed(futures):
                    results[futures[future]] = future.result()  # a job's error is raised here
                    progress.update(1)
    finally:
        if cluster is not None:
            cluster.close()
    return [results[i] for i in range(len(jobs))]
