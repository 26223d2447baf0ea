"""Shared fixtures: a quiet offline environment, temp copies of the project, one Prefect API per
session."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from clflow.scaffold import new_project, update_params

ROOT = Path(__file__).resolve().parents[1]
QUIET = {
    "DO_NOT_TRACK": "1",
    "DVC_NO_ANALYTICS": "1",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    # stages that run a flow start their own ephemeral Prefect API: its 20 s default is short here
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
}
os.environ.update(QUIET)
# Flower's own environment (built by `make install`), also for the temp copies of the project
os.environ.setdefault("CLFLOW_FLOWER_VENV", str(ROOT / ".venv-flower"))
os.environ.pop("MLFLOW_TRACKING_URI", None)
# Stages run as `python stages/...`: make that this interpreter.
os.environ["PATH"] = str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", "")

# Small but real: one seed, two epochs. TAME's selector is the MLP: `auto` trains a CNN candidate
# each time experts are added (+6 s a TAME run on digits); tests/tame/test_learner.py tests `auto`.
FAST_PARAMS = {"train": {"seeds": [0], "epochs": 2}, "tame": {"selector_backbone": "mlp"}}


def run(cmd: list[str], cwd: Path, check: bool = True, **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, **kw)
    if check and proc.returncode != 0:
        raise AssertionError(f"{cmd} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def make_project(dest: Path, overrides: dict | None = None) -> Path:
    """A git + DVC initialised copy of the project with fast params."""
    return new_project(ROOT, dest, {**FAST_PARAMS, **(overrides or {})})


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return make_project(tmp_path / "project")


def copy_project(src: Path, dest: Path) -> Path:
    """A copy of a built project (git, DVC cache, outs, MLflow store): cheaper than a rebuild.

    The copy's MLflow runs keep their artifacts where the original's experiment put them
    (MLflow stores absolute artifact URIs); session projects outlive every test.
    """
    shutil.copytree(src, dest, symlinks=True)
    return dest


@pytest.fixture(scope="session")
def built_project(tmp_path_factory, prefect_api) -> Path:
    """One project on which the pipeline flow (every stage through `dvc repro`) has run, shared:
    the pipeline takes a minute or more. Tests that change it work on a copy_project."""
    dest = make_project(tmp_path_factory.mktemp("built") / "project")
    load_flow(dest, "pipeline", "pipeline")(project=str(dest))
    return dest


@pytest.fixture(scope="session", autouse=True)
def prefect_api(tmp_path_factory):
    """One ephemeral Prefect API for the whole session (it takes ~10 s to start).

    Exported as PREFECT_API_URL too, so the flows that stages run in subprocesses (the
    federated stage's) use it instead of each starting an API of its own.
    """
    os.environ["PREFECT_HOME"] = str(tmp_path_factory.mktemp("prefect_home"))
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        os.environ["PREFECT_API_URL"] = PREFECT_API_URL.value()
        try:
            yield
        finally:
            os.environ.pop("PREFECT_API_URL", None)


def load_flow(project: Path, module: str, name: str):
    """A flow function from the project's copy of flows/<module>.py."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        f"flows_{module}_{abs(hash(str(project)))}", project / "flows" / f"{module}.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return getattr(mod, name)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float, proc: subprocess.Popen | None = None) -> None:
    """Poll `url` until it answers 200; fail early if `proc` died."""
    import time
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"process exited with {proc.returncode} before {url} answered")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"{url} did not answer within {timeout} s")


def stop(proc: subprocess.Popen) -> None:
    """Terminate a service process group and wait for it."""
    import signal

    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory):
    """A real `prefect server start` on a free 127.0.0.1 port; yields the env that points at it."""
    port = free_port()
    home = tmp_path_factory.mktemp("prefect_server_home")
    env = {
        **os.environ,
        "PREFECT_HOME": str(home),
        "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
        "PREFECT_LOGGING_LEVEL": "WARNING",
    }
    log = open(home / "server.log", "w")
    proc = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "prefect"),
            "server",
            "start",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/api/health", 120, proc)
        yield env
    finally:
        stop(proc)
        log.close()


def file_hashes(root: Path, *rel: str) -> dict[str, str]:
    """SHA-256 of every file under the given paths (to prove nothing changed)."""
    import hashlib

    out = {}
    for r in rel:
        base = root / r
        files = [base] if base.is_file() else sorted(p for p in base.rglob("*") if p.is_file())
        out.update(
            {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}
        )
    return out


def drop_experience(project: Path, name: str, rotate: float = 25.0, limit: int = 400) -> Path:
    from clflow.ops.io import write_parquet
    from clflow.streams import load_stream
    from clflow.streams.demo import example_experience

    path = project / "data" / "incoming" / name
    write_parquet(
        path,
        example_experience(load_stream(project / "data" / "stream"), rotate=rotate, limit=limit),
    )
    return delivered(path)


def delivered(path: Path) -> Path:
    """Date `path` a minute back: a finished delivery (intake leaves files still being written)."""
    os.utime(path, (time.time() - 60,) * 2)
    return path


@pytest.fixture(scope="session")
def updated_project(tmp_path_factory, built_project):
    """A project whose model was registered, then updated by the continual flow with one good and
    one bad file."""
    import polars as pl

    dest = copy_project(built_project, tmp_path_factory.mktemp("updated") / "project")
    update_params(dest, {"update": {"compare_retrain": True}})  # and retrain, to compare
    # as a user would: the pipeline's results committed (the retrain's DVC experiment needs it)
    run(["git", "add", "-A"], dest)
    run(["git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "results"], dest)
    before = {
        "stream": file_hashes(dest, "data/stream"),
        "train": pl.read_parquet(dest / "data/stream/train.parquet"),
    }
    drop_experience(dest, "rotated.parquet")
    bad = drop_experience(dest, "bad.parquet", rotate=0, limit=50)
    pl.read_parquet(bad).with_columns(pl.lit(42, dtype=pl.Int64).alias("y")).write_parquet(bad)
    delivered(bad)
    result = load_flow(dest, "continual", "continual_update")(project=str(dest))
    return dest, result, before


def post_json(url: str, body: str) -> tuple[int, dict]:
    """(HTTP status, JSON answer) of a JSON POST, error statuses included."""
    import json
    import urllib.error
    import urllib.request

    req = urllib.request.Request(
        url, data=body.encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())
