"""CPU budget and parallel runs of independent learners.

Every learner trains with one torch thread. On the default MLP (batch 32) a second thread buys
1.25x for 2x the CPU, and on a shared machine idle OpenMP threads spin for cores they do not
get (4.3x the CPU for the same work, measured with four jobs on two cores). Results also
depend on the thread count (different summation order), so one thread everywhere keeps them
bit-identical across machines and loads. The cores are used instead by training independent
learners (seeds, methods) in forked processes, as many at once as there are CPUs free.

`CLFLOW_WORKERS` sets the number of processes (1 = everything in this process).
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from clflow.util.progress import Progress, detach

T = TypeVar("T")
log = logging.getLogger("clflow.parallel")
WORKERS_ENV = "CLFLOW_WORKERS"


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
