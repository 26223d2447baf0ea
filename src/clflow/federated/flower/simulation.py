"""Flower's Simulation Engine for a clflow job: `num_supernodes` virtual clients run by Ray in
one process tree, as many at once as there are CPUs, instead of one SuperNode process each.

Run in Flower's environment (`federated.engine: flower-sim`, clflow.federated.flower.engine):

    .venv-flower/bin/python -m clflow.federated.flower.simulation JOB_DIR CPUS

The apps are the deployment's (clflow.federated.flower.apps); a virtual client has no node
config of its own, so it finds its rows file and fault in the job directory by its partition id,
and the job directory comes from the environment (`run_simulation` takes no run config).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    job_dir, cpus = (argv if argv is not None else sys.argv[1:])[:2]
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # offline: no usage report
    from flwr.simulation import run_simulation

    from clflow.federated.flower.apps import JOB_ENV, client_app, server_app

    os.environ[JOB_ENV] = str(Path(job_dir).resolve())  # Ray's workers inherit it
    from clflow.federated.flower.job import read_job

    job = read_job(job_dir)
    run_simulation(
        server_app,
        client_app,
        num_supernodes=job.nodes,
        backend_config={
            "client_resources": {"num_cpus": 1, "num_gpus": 0},
            "init_args": {"num_cpus": int(cpus), "include_dashboard": False},
        },
    )
    return 0 if (Path(job_dir) / "result.npz").exists() else 1


if __name__ == "__main__":
    sys.exit(main())
