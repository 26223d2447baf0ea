"""The files a Flower run shares with clflow: a job directory (this module owns its format).

    job.json          the run: rounds, classes, encoder spec, metric, nodes (`Job`)
    clients/NNN.npz   client NNN's local rows: `X_r`, `y_r` for each round r it holds rows
    result.npz        written by the ServerApp: merged `sums` (R, C, D) and `counts` (R, C)
                      after each round
    report.json       written by the ServerApp: per round accepted, idle, rejected
                      [(update id, reason)], seconds, payload bytes per client

numpy and the standard library only: it runs in Flower's environment and in clflow's.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from clflow.federated.faults import client_name
from clflow.federated.protocol import PrototypeServer


@dataclass(frozen=True)
class Job:
    rounds: int
    n_classes: int
    n_features: int
    encoder_kind: str
    encoder_path: str
    seed: int
    metric: str
    nodes: int
    timeout: float = 600.0
    faults: dict[str, str] = field(default_factory=dict)  # partition id -> fault (simulation)


def write_job(job_dir: Path, job: Job, rounds: list[dict[str, tuple[np.ndarray, np.ndarray]]]):
    """job.json and one rows file per client; `rounds[r][client] = (X, y)`."""
    (job_dir / "clients").mkdir(parents=True, exist_ok=True)
    _atomic_write(job_dir / "job.json", json.dumps(asdict(job), indent=1).encode())
    for k in range(job.nodes):
        arrays = {}
        for r, held in enumerate(rounds):
            if client_name(k) in held:
                arrays[f"X_{r}"], arrays[f"y_{r}"] = held[client_name(k)]
        np.savez(client_file(job_dir, k), **arrays)


def client_file(job_dir: Path, partition: int) -> Path:
    return Path(job_dir) / "clients" / f"{partition:03d}.npz"


def read_job(job_dir: str | Path) -> Job:
    return Job(**json.loads((Path(job_dir) / "job.json").read_text()))


def client_rows(path: str | Path, round_: int, n_features: int) -> tuple[np.ndarray, np.ndarray]:
    """A client's rows of one round; none (0 rows) when it holds no rows in that round."""
    with np.load(path, allow_pickle=False) as data:
        if f"X_{round_}" not in data.files:
            return np.zeros((0, n_features)), np.zeros(0, dtype=np.int64)
        return data[f"X_{round_}"], data[f"y_{round_}"]


def write_result(job_dir: Path, server: PrototypeServer, snapshots: list, rounds: list[dict]):
    """The ServerApp's outputs: merged state after each round and the per-round report."""
    sums = np.stack([s for s, _ in snapshots]) if snapshots else np.zeros((0, 0, server.dim))
    counts = np.stack([c for _, c in snapshots]) if snapshots else np.zeros((0, 0), np.int64)
    _atomic_write(job_dir / "report.json", json.dumps(rounds, indent=1).encode())
    tmp = job_dir / ".result.tmp.npz"
    np.savez(tmp, sums=sums, counts=counts)
    os.replace(tmp, job_dir / "result.npz")  # last: the engine takes it as "done"


def read_result(job_dir: Path) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    """(sums (R, C, D), counts (R, C), per-round report) of a finished run."""
    with np.load(job_dir / "result.npz", allow_pickle=False) as data:
        sums, counts = data["sums"], data["counts"]
    return sums, counts, json.loads((job_dir / "report.json").read_text())


def _atomic_write(path: Path, data: bytes) -> None:
    """(clflow.util.io's atomic writers import polars, which Flower's environment does not have.)"""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
