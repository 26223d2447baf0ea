"""The Flower apps: `client_app` computes prototype updates on a client's local rows, `server_app`
runs `PrototypeStrategy` for the job's rounds and writes the merged state.

Both read the job directory named by the run config (`job-dir`); a client's rows file and its
optional fault come from its node config (`data`, `fault`). On the Simulation Engine, which has
neither, the job directory comes from the environment and a client finds its rows file and fault
there by its partition id. Runs in Flower's environment.
"""

from __future__ import annotations

import os
from pathlib import Path

from flwr.app import ArrayRecord, Context, Message
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp

from clflow.federated.faults import client_name, corrupt
from clflow.federated.flower.job import client_file, client_rows, read_job, write_result
from clflow.federated.flower.strategy import PrototypeStrategy, encode_update
from clflow.federated.protocol import PrototypeServer, client_update, make_encoder

client_app = ClientApp()
server_app = ServerApp()
JOB_ENV = "CLFLOW_FLOWER_JOB_DIR"  # the Simulation Engine's runs have no run config


def job_dir_of(context: Context) -> Path:
    """The job directory: the run config's `job-dir` (deployment), else the environment's."""
    return Path(str(context.run_config.get("job-dir") or os.environ[JOB_ENV]))


@client_app.train()
def train(msg: Message, context: Context) -> Message:
    """This client's update for the round the server asks for."""
    job_dir = job_dir_of(context)
    job = read_job(job_dir)
    round_ = int(msg.content.config_records["config"]["round"])
    partition = int(context.node_config["partition-id"])
    # a SuperNode is started with its rows file and fault; a simulated client looks them up
    data = context.node_config.get("data") or str(client_file(job_dir, partition))
    fault = str(context.node_config.get("fault") or job.faults.get(str(partition), ""))
    if fault == "crash":
        raise RuntimeError("this client crashed (fault injection)")
    encoder = make_encoder(job.encoder_kind, job.n_features, job.seed, job.encoder_path)

    def update(r: int):
        X, y = client_rows(data, r, job.n_features)
        return client_update(X, y, encoder, encoder.hash, client_name(partition), r)

    previous = update(round_ - 1) if fault == "replay" and round_ > 0 else None
    return Message(encode_update(corrupt(update(round_), fault, previous)), reply_to=msg)


@server_app.main()
def main(grid: Grid, context: Context) -> None:
    """All rounds of the job; the merged state after each goes to the job directory."""
    job_dir = job_dir_of(context)
    job = read_job(job_dir)
    encoder = make_encoder(job.encoder_kind, job.n_features, job.seed, job.encoder_path)
    server = PrototypeServer(encoder.dim, job.n_classes, encoder.hash, job.metric)
    strategy = PrototypeStrategy(server, min_nodes=job.nodes)
    strategy.start(grid, ArrayRecord(), num_rounds=job.rounds, timeout=job.timeout)
    write_result(job_dir, server, strategy.snapshots, strategy.rounds)
