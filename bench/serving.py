"""What recording served traffic costs: `clflow serve` with and without its log, side by side.

    python bench/serving.py [--requests 2000] [--rows 10]

A TAME model trained on Split-Digits is registered in a temporary MLflow store and served twice
on loopback: once recording every answered request to a served-traffic log (the default), once
with `--no-record`. Requests of `--rows` test rows go to the two servers in turn, so both see the
same load from the rest of the machine; the table gives each one's latency percentiles and their
ratio. The issue's bound: recording adds at most 10 % at p99.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

from clflow.config import StreamConfig, TameConfig, TrainConfig
from clflow.evaluation import run_stream
from clflow.streams import build_stream
from clflow.tame.training import make_tame

BIN = Path(sys.executable).parent


def registered_model(tmp: Path) -> tuple[str, np.ndarray]:
    """(store URI, test rows) of a TAME model registered as `bench-tame` version 1."""
    import mlflow

    from clflow.tame.persist import save_tame
    from clflow.tame.pyfunc import log_tame_model
    from clflow.tracking.store import use_store

    stream = build_stream(StreamConfig(source="digits"))
    train, tame = TrainConfig(epochs=2), TameConfig(selector_backbone="mlp")
    learner = make_tame(stream, train, tame, 0)
    run_stream(learner, stream, batch_size=train.batch_size, epochs=train.epochs, seed=0)
    save_tame(tmp / "seed_0.pt", learner, classes=stream.classes)
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    use_store(uri)
    with mlflow.start_run():
        log_tame_model(tmp / "seed_0.pt", stream.test.X[:2], registered_model_name="bench-tame")
    return uri, stream.test.X


def start(uri: str, port: int, record: list[str], log) -> subprocess.Popen:
    cmd = [str(BIN / "clflow"), "serve", "models:/bench-tame/1", "--uri", uri, "--port", str(port)]
    proc = subprocess.Popen([*cmd, *record], stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2)
            return proc
        except OSError:
            time.sleep(0.5)
    raise SystemExit(f"clflow serve on port {port} did not start; see its log")


def latency(port: int, body: bytes) -> float:
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/invocations",
        data=body,
        headers={"Content-Type": "application/json"},
    )
    t = time.perf_counter()
    with urllib.request.urlopen(req, timeout=60) as resp:
        resp.read()
    return time.perf_counter() - t


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=2000, help="per server (default 2000)")
    parser.add_argument("--rows", type=int, default=10, help="rows a request (default 10)")
    args = parser.parse_args()
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        uri, X = registered_model(tmp)
        log = open(tmp / "serve.log", "w")
        servers = {
            "recording": start(uri, 5811, ["--record", str(tmp / "served")], log),
            "not recording": start(uri, 5812, ["--no-record"], log),
        }
        ports = {"recording": 5811, "not recording": 5812}
        rng = np.random.default_rng(0)
        times: dict[str, list[float]] = {name: [] for name in servers}
        try:
            for i in range(args.requests + 50):
                rows = X[rng.integers(0, len(X), args.rows)]
                body = json.dumps({"inputs": rows.tolist()}).encode()
                for name in sorted(servers, key=lambda n: (n == "recording") ^ (i % 2 == 0)):
                    took = latency(ports[name], body)
                    if i >= 50:  # the first requests warm both servers up
                        times[name].append(took)
        finally:
            for proc in servers.values():
                proc.terminate()
                proc.wait(30)
            log.close()
        recorded = sum(1 for _ in (tmp / "served").glob("segment-*.parquet"))
    pct = {n: np.percentile(t, [50, 90, 99]) * 1e3 for n, t in times.items()}
    print(f"\n{args.requests} requests of {args.rows} rows to each server, in turn "
          f"({recorded} segment(s) written)\n")  # fmt: skip
    print("| server | p50 ms | p90 ms | p99 ms |\n|---|---|---|---|")
    for name, (p50, p90, p99) in pct.items():
        print(f"| {name} | {p50:.2f} | {p90:.2f} | {p99:.2f} |")
    ratio = pct["recording"] / pct["not recording"]
    print(f"| recording / not | {ratio[0]:.3f} | {ratio[1]:.3f} | {ratio[2]:.3f} |")


if __name__ == "__main__":
    sys.exit(main())
