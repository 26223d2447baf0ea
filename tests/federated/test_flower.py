"""Flower as the federated engine, for real: a loopback SuperLink and SuperNodes from
.venv-flower running clflow's ClientApp and PrototypeStrategy."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, copy_project, run, update_params

from clflow.config import StreamConfig
from clflow.federated.faults import client_name
from clflow.federated.flower.engine import federated_on_flower, flower_venv
from clflow.federated.simulate import central_server
from clflow.streams import build_stream

pytestmark = pytest.mark.slow

FAULTS = {1: "nan", 2: "dimension", 3: "negative-count", 4: "encoder", 5: "replay", 6: "crash"}
REASONS = {
    "nan": "NaN or inf",
    "dimension": "wrong dimension",
    "negative-count": "non-positive count",
    "encoder": "unknown encoder hash",
    "replay": "duplicate update id",
    "crash": "client error",
}


def test_pip_check_is_clean_in_both_environments():
    for python in (Path(sys.executable), flower_venv() / "bin" / "python"):
        done = subprocess.run([python, "-m", "pip", "check"], capture_output=True, text=True)
        assert done.returncode == 0, f"{python}: {done.stdout}{done.stderr}"
    flower = subprocess.run(
        [flower_venv() / "bin" / "python", "-c", "import flwr, numpy; print(flwr.__version__)"],
        capture_output=True,
        text=True,
    )
    assert flower.stdout.strip() == "1.42.0"


# Runs in .venv-flower: a valid reply, a reply without an update, a client's error reply.
STRATEGY_CHECK = """
import json
import numpy as np
from flwr.app import ConfigRecord, Error, Message, MessageType, RecordDict
from flwr.supercore.task_identity import TaskIdentity
from clflow.federated.flower.strategy import PrototypeStrategy, decode_update, encode_update
from clflow.federated.protocol import PrototypeServer, client_update, make_encoder

TaskIdentity.run_id, TaskIdentity.task_id, TaskIdentity.node_id = 1, 1, 0  # as in a ServerApp
enc = make_encoder("raw", 4, 0, "")
ask = Message(RecordDict({"config": ConfigRecord({"round": 0})}), dst_node_id=1,
              message_type=MessageType.TRAIN)
X, y = np.random.default_rng(0).normal(size=(5, 4)), np.array([0, 1, 1, 2, 2])
good = client_update(X, y, enc, enc.hash, "client-000", 0)
back = decode_update(encode_update(good))
strategy = PrototypeStrategy(PrototypeServer(4, 3, enc.hash), 1)
arrays, metrics = strategy.aggregate_train(1, [
    Message(encode_update(good), reply_to=ask),
    Message(RecordDict({"config": ConfigRecord({"x": 1})}), reply_to=ask),
    Message(Error(0, "boom"), reply_to=ask),
])
print(json.dumps({
    "same": all(np.array_equal(getattr(back, k), getattr(good, k))
                for k in ("classes", "sums", "counts")) and back.update_id == good.update_id,
    "sums": arrays["sums"].numpy().tolist(), "expected": (X[[0]].tolist() + [
        X[1:3].sum(0).tolist(), X[3:].sum(0).tolist()]),
    "metrics": dict(metrics), "rejected": strategy.rounds[0]["rejected"],
}))
"""


def test_strategy_decodes_merges_and_reports_bad_replies():
    done = subprocess.run(
        [flower_venv() / "bin" / "python", "-c", STRATEGY_CHECK],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["same"] and np.allclose(out["sums"], out["expected"], rtol=0, atol=1e-12)
    assert out["metrics"] == {"accepted": 1, "rejected": 2, "idle": 0}
    assert [why for _, why in out["rejected"]] == [
        "malformed update: missing or unreadable 'update'",
        "client error: boom",
    ]


@pytest.mark.parametrize("engine", ["flower", "flower-sim"])
def test_flower_merge_equals_in_process_and_central_and_rejects_bad_clients(tmp_path, engine):
    """An honest client and one of each fault, every client holding rows in both rounds: the
    server rejects each fault with its reason, merges the rest, and its prototypes are the
    in-process merge's and the centrally computed ones (of the honest rows). On SuperNodes
    (`flower`) and on the Simulation Engine's virtual clients (`flower-sim`)."""
    stream = build_stream(StreamConfig(source="digits", experiences=2, seed=0))
    tr, n = stream.train, 7
    rounds = [
        {client_name(k): rows for k, rows in enumerate(np.array_split(np.flatnonzero(
            tr.experience == r), n))}
        for r in range(2)
    ]  # fmt: skip
    out = federated_on_flower(
        stream, rounds, n, ("random", 0, ""), "cosine", tmp_path / "job", FAULTS, engine
    )
    flower = out["flower"]
    assert flower["max_diff_vs_in_process"] is not None
    assert flower["max_diff_vs_in_process"] <= 1e-6
    # the honest rows: client 0's, and the replayer's first round
    honest = np.concatenate([rd[client_name(0)] for rd in rounds] + [rounds[0][client_name(5)]])
    central = central_server(stream, honest, out["encoder"], out["encoder"].hash, "cosine")
    server = out["server"]
    assert np.array_equal(server.counts, central.counts)
    assert np.abs(server.prototypes() - central.prototypes()).max() <= 1e-6
    reasons = {(r, who.split("/")[0], why) for r, who, why in flower["rejections"]}
    for k, fault in FAULTS.items():
        if fault == "crash":  # its reply is an error; Flower names the node, not the client
            assert sum(REASONS[fault] in why for _, _, why in reasons) == 2
            continue
        rounds_rejected = {r for r, who, why in reasons if who == client_name(k)}
        assert rounds_rejected == ({1} if fault == "replay" else {0, 1}), fault
        assert all(REASONS[fault] in why for _, who, why in reasons if who == client_name(k))
    assert [h["accepted"] for h in out["history"]] == [2, 1]  # the replayer's round 0 is honest
    assert all(b > 0 for b in flower["round_seconds"]) and flower["bytes_per_client_round_mean"]


def test_without_flowers_environment_the_stage_stops_with_one_line(built_project, tmp_path):
    """(`dvc repro federated` on Flower, trained encoder: tests/test_pipeline.py's recurring
    MNIST-1D run.)"""
    project = copy_project(built_project, tmp_path / "project")
    update_params(project, {"federated": {"engine": "flower"}})
    before = (project / "models/federated/prototypes.parquet").read_bytes()
    missing = {**os.environ, "CLFLOW_FLOWER_VENV": str(tmp_path / "no-venv")}
    failed = run([sys.executable, "stages/federated.py"], project, check=False, env=missing)
    assert failed.returncode != 0 and "make install" in failed.stderr.strip().splitlines()[-1]
    assert (project / "models/federated/prototypes.parquet").read_bytes() == before


def test_more_clients_than_the_machine_runs_are_refused_before_anything_starts(tmp_path):
    from clflow.config import FederatedConfig
    from clflow.errors import ConfigError
    from clflow.federated.flower.engine import check_clients, max_supernodes
    from clflow.federated.prefect_engine import run_rounds

    limit = max_supernodes()
    assert 1 <= limit <= 16 * (os.cpu_count() or 1)
    check_clients(limit)  # as many as it runs: accepted
    stream = build_stream(StreamConfig(source="digits", limit=300))
    cfg = FederatedConfig(engine="flower", clients=1000)
    with pytest.raises(ConfigError) as err:
        run_rounds(stream, cfg, "models/encoder/encoder.npz", tmp_path / "flower", "params.yaml")
    line = err.value.line()
    assert line.startswith("params.yaml: field 'federated.clients': 1000 clients")
    assert f"at most {limit}" in line and "federated.engine: prefect" in line
    assert not (tmp_path / "flower").exists()  # no SuperLink, no SuperNode, no job
