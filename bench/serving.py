"""`clflow serve` under load against `mlflow models serve`, and what recording traffic costs.

    python bench/serving.py [--clients 1 8 32] [--workers N] [--seconds 10] [--repeat 3]
    python bench/serving.py --recording-cost [--requests 2000] [--rows 10]

A TAME model trained on Split-Digits is registered in a temporary MLflow store.

Load (the default): the same version is served on loopback by `clflow serve` (recording every
answered request, its default) and by `mlflow models serve --env-manager local`, both with
`--workers` processes (default: the CPUs this process may use). For each number of concurrent
clients (threads, each on its own keep-alive connection, sending requests of `--rows` test
rows for `--seconds`), the two servers are loaded in turn, in alternating order, `--repeat`
times, so both see the same machine; each cell is the median of its repeats: requests/s, p50
and p99 latency, errors (all repeats) and the servers' resident memory (all processes, the
most seen). Last, clflow's throughput as a ratio of MLflow's, per round (the two servers ran
back to back) and their median (the bound: 0.95).

--recording-cost: `clflow serve` twice (one worker each), recording and `--no-record`,
requests in turn; the ratio of latency percentiles (bound: recording adds at most 10 % at p99).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop(proc: subprocess.Popen) -> None:
    """Stop a server and its workers (its own process group)."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)
    except ProcessLookupError:
        pass


def start(cmd: list[str], port: int, log, env: dict | None = None) -> subprocess.Popen:
    """A server started with `cmd` (in its own session), once it answers /ping."""
    proc = subprocess.Popen(
        cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
    )
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2)
            return proc
        except OSError:
            time.sleep(0.5)
    stop(proc)
    raise SystemExit(f"the server on port {port} did not start: {' '.join(cmd)}")


def clflow_serve(uri: str, port: int, options: list[str]) -> list[str]:
    serve = [str(BIN / "clflow"), "serve", "models:/bench-tame/1", "--uri", uri]
    return [*serve, "--port", str(port), *options]


def rss_mb(pid: int) -> float:
    """Resident memory of a process and every process below it, in MiB (from /proc)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(parent, []).append(int(stat.parent.name))
    pages, todo = 0, [pid]
    while todo:
        p = todo.pop()
        todo += children.get(p, [])
        try:
            pages += int(Path(f"/proc/{p}/statm").read_text().split()[1])
        except (OSError, ValueError, IndexError):
            continue
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


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


def load(port: int, bodies: list[bytes], clients: int, seconds: float) -> dict:
    """`clients` threads, each on its own keep-alive connection, posting `bodies` in turn for
    `seconds`: requests/s, p50 and p99 in ms, and errors (non-200 answers or broken
    connections)."""
    stop_at = time.monotonic() + seconds
    times: list[list[float]] = [[] for _ in range(clients)]
    errors = [0] * clients
    headers = {"Content-Type": "application/json"}

    def client(k: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        i = k
        while time.monotonic() < stop_at:
            t = time.perf_counter()
            try:
                conn.request("POST", "/invocations", bodies[i % len(bodies)], headers)
                resp = conn.getresponse()
                resp.read()
                ok = resp.status == 200
            except (OSError, http.client.HTTPException):
                ok = False
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            if ok:
                times[k].append(time.perf_counter() - t)
            else:
                errors[k] += 1
            i += clients
        conn.close()

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    began = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    took = time.monotonic() - began
    done = np.concatenate([np.asarray(t) for t in times])
    p50, p99 = np.percentile(done, [50, 99]) * 1e3 if len(done) else (np.nan, np.nan)
    return {"rps": len(done) / took, "p50": p50, "p99": p99, "errors": sum(errors)}


def load_table(args, uri: str, X: np.ndarray, tmp: Path) -> None:
    rng = np.random.default_rng(0)
    bodies = [
        json.dumps({"inputs": X[rng.integers(0, len(X), args.rows)].tolist()}).encode()
        for _ in range(256)
    ]
    workers = str(args.workers)
    ports = {"clflow serve": free_port(), "mlflow models serve": free_port()}
    path = str(BIN) + os.pathsep + os.environ["PATH"]  # --env-manager local execs uvicorn
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "PATH": path}
    record = ["--workers", workers, "--record", str(tmp / "served")]
    mlflow_serve = [str(BIN / "mlflow"), "models", "serve", "-m", "models:/bench-tame/1"]
    commands = {
        "clflow serve": clflow_serve(uri, ports["clflow serve"], record),
        "mlflow models serve": [
            *mlflow_serve, "--env-manager", "local", "-w", workers,
            "-p", str(ports["mlflow models serve"]),
        ],
    }  # fmt: skip
    cells: dict[tuple[int, str], list[dict]] = {}
    memory: dict[tuple[int, str], float] = {}
    with open(tmp / "serve.log", "w") as log:
        servers: dict[str, subprocess.Popen] = {}
        try:
            for name, cmd in commands.items():
                servers[name] = start(cmd, ports[name], log, env)
            for name in servers:  # warm both up
                load(ports[name], bodies, 2, 2.0)
            turn = 0
            for _ in range(args.repeat):
                for clients in args.clients:
                    turn += 1
                    for name in list(servers)[:: 1 if turn % 2 else -1]:
                        got = load(ports[name], bodies, clients, args.seconds)
                        cells.setdefault((clients, name), []).append(got)
                        rss = rss_mb(servers[name].pid)
                        memory[clients, name] = max(memory.get((clients, name), 0.0), rss)
        finally:
            for proc in servers.values():
                stop(proc)
    segments = len(list((tmp / "served").glob("segment-*.parquet")))
    print(f"\n{args.workers} worker(s) each; requests of {args.rows} rows, {args.seconds:g} s "
          f"a cell, median of {args.repeat}; clflow serve recording "
          f"({segments} segment(s) written)\n")  # fmt: skip
    print("| clients | server | requests/s | p50 ms | p99 ms | errors | RSS MiB |")
    print("|---|---|---|---|---|---|---|")
    median = {
        key: {k: float(np.median([g[k] for g in got])) for k in ("rps", "p50", "p99")}
        for key, got in cells.items()
    }
    for (clients, name), m in sorted(median.items()):
        errors = sum(g["errors"] for g in cells[clients, name])
        print(f"| {clients} | {name} | {m['rps']:.0f} | {m['p50']:.2f} | {m['p99']:.2f} "
              f"| {errors} | {memory[clients, name]:.0f} |")  # fmt: skip
    # each round's two servers ran back to back: their ratio cancels what the machine did then
    print("\n| clients | clflow / mlflow requests/s: median of rounds | rounds |\n|---|---|---|")
    for clients in args.clients:
        ours, theirs = cells[clients, "clflow serve"], cells[clients, "mlflow models serve"]
        ratios = [a["rps"] / b["rps"] for a, b in zip(ours, theirs, strict=True)]
        listed = ", ".join(f"{r:.2f}" for r in ratios)
        print(f"| {clients} | {np.median(ratios):.3f} | {listed} |")


def recording_cost(args, uri: str, X: np.ndarray, tmp: Path) -> None:
    ports = {"recording": free_port(), "not recording": free_port()}
    options = {"recording": ["--record", str(tmp / "served")], "not recording": ["--no-record"]}
    rng = np.random.default_rng(0)
    times: dict[str, list[float]] = {name: [] for name in ports}
    with open(tmp / "serve.log", "w") as log:
        servers: dict[str, subprocess.Popen] = {}
        try:
            for n in ports:
                command = clflow_serve(uri, ports[n], [*options[n], "--workers", "1"])
                servers[n] = start(command, ports[n], log)
            for i in range(args.requests + 50):
                rows = X[rng.integers(0, len(X), args.rows)]
                body = json.dumps({"inputs": rows.tolist()}).encode()
                for name in sorted(servers, key=lambda n: (n == "recording") ^ (i % 2 == 0)):
                    took = latency(ports[name], body)
                    if i >= 50:  # the first requests warm both servers up
                        times[name].append(took)
        finally:
            for proc in servers.values():
                stop(proc)
    recorded = sum(1 for _ in (tmp / "served").glob("segment-*.parquet"))
    pct = {n: np.percentile(t, [50, 90, 99]) * 1e3 for n, t in times.items()}
    print(f"\n{args.requests} requests of {args.rows} rows to each server, in turn "
          f"({recorded} segment(s) written)\n")  # fmt: skip
    print("| server | p50 ms | p90 ms | p99 ms |\n|---|---|---|---|")
    for name, (p50, p90, p99) in pct.items():
        print(f"| {name} | {p50:.2f} | {p90:.2f} | {p99:.2f} |")
    ratio = pct["recording"] / pct["not recording"]
    print(f"| recording / not | {ratio[0]:.3f} | {ratio[1]:.3f} | {ratio[2]:.3f} |")


def main() -> None:
    from clflow.util.parallel import cpu_budget

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--workers", type=int, default=cpu_budget())
    parser.add_argument("--seconds", type=float, default=10.0, help="a cell (default 10)")
    parser.add_argument("--repeat", type=int, default=3, help="rounds of every cell (default 3)")
    parser.add_argument("--rows", type=int, default=10, help="rows a request (default 10)")
    parser.add_argument("--recording-cost", action="store_true", help="the recording table")
    parser.add_argument("--requests", type=int, default=2000, help="per server (default 2000)")
    args = parser.parse_args()
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        uri, X = registered_model(tmp)
        (recording_cost if args.recording_cost else load_table)(args, uri, X, tmp)


if __name__ == "__main__":
    sys.exit(main())
