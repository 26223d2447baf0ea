"""Run a federated job on Flower for real, from Flower's own environment (.venv-flower) with
clflow's `src/` on PYTHONPATH.

`flower`: the Deployment Engine, a SuperLink and one SuperNode per client on loopback, the app
submitted with `flwr run`. Not `flwr run`'s per-run dependency install (it needs the network):
every process runs with `--disable-runtime-dependency-installation`. `flwr run` exits 0 even
when the ServerApp fails, so the run's status is read back with `flwr ls` and its result files
must exist.

`flower-sim`: the Simulation Engine, the same apps on virtual clients in one Ray process tree
(clflow.federated.flower.simulation); no process per client, so no client limit.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import shutil
import socket
import subprocess
import time
from contextlib import ExitStack
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import psutil

from clflow.errors import ClflowError, ConfigError
from clflow.federated.faults import FAULTS
from clflow.federated.flower.job import Job, client_file, read_result, write_job
from clflow.federated.protocol import MergeReport, PrototypeServer, make_encoder
from clflow.federated.simulate import local_accuracies, merge_in_process, round_record
from clflow.streams import Stream
from clflow.util.services import wait_for_port

log = logging.getLogger("clflow.federated")
SRC = Path(__file__).resolve().parents[3]
APP_DIR = Path(__file__).resolve().parent / "app"
VENV_ENV = "CLFLOW_FLOWER_VENV"
WAVE = 8  # SuperNodes started at once


def flower_venv() -> Path:
    """Flower's environment: $CLFLOW_FLOWER_VENV, else .venv-flower in the project."""
    venv = Path(os.environ.get(VENV_ENV) or SRC.parent / ".venv-flower")
    if not (venv / "bin" / "flower-superlink").exists():
        raise ClflowError(
            "Flower's environment is missing (federated.engine: flower); run `make install`",
            file=venv,
        )
    return venv


def flower_env(venv: Path, home: Path) -> dict[str, str]:
    """The environment of Flower's processes: its venv first, clflow's src/ importable, quiet
    and offline (no telemetry, no update check, no Ray usage report)."""
    env = {
        **os.environ,
        "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONPATH": str(SRC),
        "FLWR_HOME": str(home),
        "FLWR_TELEMETRY_ENABLED": "0",
        "FLWR_DISABLE_UPDATE_CHECK": "1",
        "RAY_USAGE_STATS_ENABLED": "0",
    }
    env.pop("VIRTUAL_ENV", None)
    return env


@dataclass
class FlowerRun:
    run_id: int
    status: str
    seconds: float  # from submitting the app to its end
    server_peak_rss: int  # bytes: SuperLink and the ServerApp's processes, polled


def free_ports(n: int) -> list[int]:
    """n distinct free TCP ports on 127.0.0.1 (held open together so none repeats)."""
    with ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(n)]
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]


def process_tree(pid: int) -> list[psutil.Process]:
    """A process and all its descendants; none if it has ended."""
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


class Loopback:
    """A SuperLink and `nodes` SuperNodes on 127.0.0.1; each stopped with its children on exit.
    Logs go to `job_dir/logs/`."""

    def __init__(self, job_dir: Path, nodes: int, faults: dict[int, str] | None = None):
        self.job_dir, self.nodes, self.faults = Path(job_dir), nodes, faults or {}
        self.venv = flower_venv()
        self.procs: list[subprocess.Popen] = []
        self.home = self.job_dir / "flwr-home"
        self.env = flower_env(self.venv, self.home)

    def _start(self, name: str, args: list[str]) -> subprocess.Popen:
        log = (self.job_dir / "logs" / f"{name}.log").open("wb")
        proc = subprocess.Popen(
            [str(self.venv / "bin" / args[0]), *args[1:]],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=self.env,  # the caller's process group: a stop of the stage stops them too
        )
        self.procs.append(proc)
        return proc

    def __enter__(self) -> Loopback:
        (self.job_dir / "logs").mkdir(parents=True, exist_ok=True)
        # Flower 1.42 serves the SuperLink's Fleet, Control and Runtime APIs on one HTTP port
        port, *node_ports = free_ports(1 + self.nodes)
        self.address = f"127.0.0.1:{port}"
        try:
            self.superlink = self._start(
                "superlink",
                ["flower-superlink", "--insecure", "--disable-runtime-dependency-installation",
                 "--host", "127.0.0.1", "--port", str(port)],
            )  # fmt: skip
            wait_for_port(self.address, 60, "Flower's SuperLink")
            # In waves: 100 SuperNodes registering at once on 2 cores time out, and Flower 1.42
            # refuses a retried registration of the same key (measured: 81 of 100 never joined).
            for first in range(0, self.nodes, WAVE):
                wave = range(first, min(first + WAVE, self.nodes))
                for k in wave:
                    self._start_node(k, node_ports[k])
                for k in wave if wave.stop < self.nodes else ():  # the last joins as the run starts
                    self._wait_registered(k)
        except BaseException:
            self.__exit__()
            raise
        self.home.mkdir(exist_ok=True)
        (self.home / "config.toml").write_text(
            f'[superlink.local]\naddress = "{self.address}"\ninsecure = true\n'
        )
        return self

    def _start_node(self, k: int, port: int) -> None:
        config = f"partition-id={k} data={json.dumps(str(client_file(self.job_dir, k)))}"
        if self.faults.get(k):
            config += f" fault={json.dumps(self.faults[k])}"
        self._start(
            f"supernode-{k:03d}",
            ["flower-supernode", "--insecure", "--superlink", self.address,
             "--host", "127.0.0.1", "--port", str(port), "--node-config", config],
        )  # fmt: skip

    def _wait_registered(self, k: int, timeout: float = 120) -> None:
        """Until SuperNode k has its node id from the SuperLink (its log says so)."""
        log_file, proc = self.job_dir / "logs" / f"supernode-{k:03d}.log", self.procs[k + 1]
        deadline = time.monotonic() + timeout
        while b"SuperNode ID" not in log_file.read_bytes():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise ClflowError(
                    f"SuperNode {k} did not join the SuperLink within {timeout:g} s", file=log_file
                )
            time.sleep(0.2)

    def __exit__(self, *exc) -> None:
        """Stop every process started and what each started (SuperExec, ServerApp, ClientApps)."""
        procs = [p for proc in self.procs for p in process_tree(proc.pid)]
        for p in procs:
            try:
                p.terminate()
            except psutil.NoSuchProcess:
                pass
        _, alive = psutil.wait_procs(procs, timeout=10)
        for p in alive:
            p.kill()
        for proc in self.procs:
            proc.wait()

    def flwr(self, *args: str, timeout: float = 120) -> str:
        """A `flwr` CLI command against this SuperLink; its stdout."""
        done = subprocess.run(
            [str(self.venv / "bin" / "flwr"), *args],
            capture_output=True,
            text=True,
            env=self.env,
            timeout=timeout,
        )
        if done.returncode:
            raise ClflowError(
                f"`flwr {shlex.join(args)}` failed: {(done.stderr or done.stdout).strip()[-300:]}",
                file=self.job_dir / "logs",
            )
        return done.stdout

    def run(self, timeout: float) -> FlowerRun:
        """Submit the app, wait for the run to end, and return how it ended."""
        start = time.perf_counter()
        out = self.flwr(
            "run", str(APP_DIR), "local", "--format", "json",
            "--run-config", f"job-dir={json.dumps(str(self.job_dir))}",
        )  # fmt: skip
        run_id = int(json.loads(out)["run-id"])
        peak, status, asked = 0, "", 0.0
        # The ServerApp's result file says it is done; `flwr ls` (a CLI start, ~1.5 s of CPU)
        # is asked every 10 s for a run that fails before writing it, then until the status
        # catches up.
        while time.perf_counter() - start < timeout:
            peak = max(peak, self._server_rss())
            done = (self.job_dir / "result.npz").exists()
            if done or time.perf_counter() - asked > 10:
                asked = time.perf_counter()
                status = self.status(run_id)
                if status.startswith("finished"):
                    break
            time.sleep(0.5)
        seconds = time.perf_counter() - start
        # the ServerApp's own log (its strategy's rejections, a traceback) next to the others
        (self.job_dir / "logs" / "serverapp.log").write_text(
            self.flwr("log", str(run_id), "local", "--show")
        )
        if not status.startswith("finished"):
            raise ClflowError(f"the Flower run {run_id} did not end within {timeout:g} s "
                              f"(status {status!r})", file=self.job_dir / "logs")  # fmt: skip
        return FlowerRun(run_id, status, seconds, peak)

    def status(self, run_id: int) -> str:
        """The run's status as `flwr ls` reports it (e.g. `finished:completed`)."""
        reply = json.loads(self.flwr("ls", "local", "--run-id", str(run_id), "--format", "json"))
        if not reply.get("runs"):  # e.g. a request that timed out on a loaded machine: ask again
            log.warning("flwr ls: %s", reply.get("error-message", reply))
            return ""
        return reply["runs"][0]["status"]

    def _server_rss(self) -> int:
        """Resident memory of the SuperLink and what it started (SuperExec, ServerApp)."""
        try:
            return sum(p.memory_info().rss for p in process_tree(self.superlink.pid))
        except psutil.Error:
            return 0


def simulate(job_dir: Path, job: Job) -> FlowerRun:
    """The job on Flower's Simulation Engine: virtual clients in one process tree (Ray), as many
    at once as this process may use CPUs; peak RSS of the whole tree, polled."""
    from clflow.util.parallel import cpu_budget

    venv = flower_venv()
    (job_dir / "logs").mkdir(parents=True, exist_ok=True)
    cmd = [str(venv / "bin" / "python"), "-m", "clflow.federated.flower.simulation",
           str(job_dir), str(cpu_budget())]  # fmt: skip
    t0, peak = time.monotonic(), 0
    with (job_dir / "logs" / "simulation.log").open("wb") as log_file:
        proc = subprocess.Popen(
            cmd, stdout=log_file, stderr=subprocess.STDOUT, env=flower_env(venv, job_dir / "home")
        )
        try:
            while proc.poll() is None:
                if time.monotonic() - t0 > job.timeout:
                    raise ClflowError(
                        f"the Flower simulation ran past {job.timeout:g} s", file=job_dir
                    )
                try:
                    peak = max(peak, sum(p.memory_info().rss for p in process_tree(proc.pid)))
                except psutil.Error:
                    pass
                time.sleep(0.5)
        finally:
            for p in reversed(process_tree(proc.pid)):  # Ray's daemons too
                try:
                    p.kill()
                except psutil.Error:
                    pass
            proc.wait()
    done = proc.returncode == 0 and (job_dir / "result.npz").exists()
    status = "finished:completed" if done else f"exited {proc.returncode}"
    return FlowerRun(0, status, time.monotonic() - t0, peak)


def run_job(
    job_dir: Path,
    job: Job,
    rounds: list,
    faults: dict[int, str] | None = None,
    engine: str = "flower",
) -> FlowerRun:
    """Write the job, run it on a loopback Flower deployment (`flower`) or Flower's Simulation
    Engine (`flower-sim`), and check it completed."""
    unknown = {f for f in (faults or {}).values() if f and f not in FAULTS}
    if unknown:
        raise ValueError(f"unknown faults {sorted(unknown)} (one of {', '.join(FAULTS)})")
    if engine == "flower-sim":  # virtual clients find their fault in the job
        job = replace(job, faults={str(k): f for k, f in (faults or {}).items() if f})
    write_job(job_dir, job, rounds)
    if engine == "flower-sim":
        run, see = simulate(job_dir, job), "logs/simulation.log"
    else:
        with Loopback(job_dir, job.nodes, faults) as flower:
            run, see = flower.run(job.timeout), "logs/serverapp.log"
    if run.status != "finished:completed" or not (job_dir / "result.npz").exists():
        raise ClflowError(
            f"the Flower run {run.run_id} ended {run.status!r}; see {see}", file=job_dir
        )
    return run


# Measured with Flower 1.42 on 2 cores: a SuperNode and its ClientApp processes take ~135 MB;
# 30 clients ran, 100 overloaded the SuperLink (it stopped answering `flwr ls`).
SUPERNODE_BYTES = 150 << 20
SUPERNODES_PER_CPU = 16


def max_supernodes() -> int:
    """How many SuperNodes this machine runs: 16 per CPU it may use, in half its memory."""
    from clflow.util.parallel import cpu_budget

    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return max(1, min(SUPERNODES_PER_CPU * cpu_budget(), memory // 2 // SUPERNODE_BYTES))


def check_clients(n_clients: int, params: str | Path | None = None) -> None:
    """Refuse, before anything starts, more clients than this machine can run as SuperNodes."""
    limit = max_supernodes()
    if n_clients > limit:
        raise ConfigError(
            f"{n_clients} clients need {n_clients} Flower SuperNodes (~150 MB each); this "
            f"machine runs at most {limit} (16 per CPU, in half its memory). For more clients "
            "use federated.engine: prefect (with federated.runner: dask), or Flower's "
            "Simulation Engine on a larger machine",
            file=params,
            field="federated.clients",
        )


def federated_on_flower(
    stream: Stream,
    rounds: list[dict[str, np.ndarray]],
    n_clients: int,
    encoder_spec: tuple[str, int, str],
    metric: str,
    job_dir: Path,
    faults: dict[int, str] | None = None,
    engine: str = "flower",
) -> dict:
    """The federated rounds on Flower: one SuperNode per client (`flower`), or as many virtual
    clients on the Simulation Engine (`flower-sim`), each holding its rows of `rounds`
    (`simulate.partition`), encoder (kind, seed, path). Returns what the Prefect flow returns,
    plus `flower` (run time, per-round seconds, bytes, rejections, memory)."""
    if engine == "flower":
        check_clients(n_clients)
    kind, seed, path = encoder_spec
    encoder = make_encoder(kind, stream.n_features, seed, path)
    tr = stream.train
    job = Job(len(rounds), len(stream.classes), stream.n_features, kind, str(Path(path).resolve()),
              seed, metric, nodes=n_clients)  # fmt: skip
    if job_dir.exists():
        shutil.rmtree(job_dir)  # the last run's job: its logs are kept until the next run
    held = [{c: (tr.X[r], tr.y[r]) for c, r in rd.items()} for rd in rounds]
    run = run_job(job_dir, job, held, faults, engine)
    sums, counts, report = read_result(job_dir)
    history, all_rows = [], []
    for r, clients in enumerate(rounds):
        server = PrototypeServer(encoder.dim, len(stream.classes), encoder.hash, metric)
        server.sums, server.counts = sums[r], counts[r]
        merge = MergeReport(report[r]["accepted"], [tuple(x) for x in report[r]["rejected"]])
        all_rows += list(clients.values())
        history.append(
            round_record(r, server, stream, encoder, np.concatenate(all_rows), len(clients), merge)
        )
    sent = [b for rd in report for b in rd["bytes"].values()]
    reference, _ = merge_in_process(stream, rounds, encoder, metric, faults)
    return {
        "history": history,
        "server": server,
        "local_accuracies": local_accuracies(stream, rounds, encoder, metric),
        "encoder": encoder,
        "flower": {
            "run_seconds": run.seconds,
            "round_seconds": [rd["seconds"] for rd in report],
            "bytes_per_client_round_mean": float(np.mean(sent)),
            "server_peak_rss_mb": run.server_peak_rss / 2**20,
            "rejections": [[r["round"], *x] for r in report for x in r["rejected"]],
            # the in-process merge of the same updates: equal counts, prototypes to float64
            "max_diff_vs_in_process": (
                float(np.abs(reference.prototypes() - server.prototypes()).max())
                if np.array_equal(reference.counts, server.counts)
                else None  # not even the same rows merged
            ),
        },
    }
