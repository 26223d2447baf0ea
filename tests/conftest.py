"""Shared fixtures: a quiet offline environment, temp copies of the project, one Prefect API per
session."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
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
if os.environ.get("PYTEST_XDIST_WORKER"):
    # Several workers share the cores, and each one's stages and servers as well: a second
    # OpenMP/BLAS thread per process spins for a core it does not get. Measured beside one busy
    # process: the CNN-selector test took 140 s with two torch threads, 46 s with one. The
    # library trains on one thread anyway (clflow.util.parallel), so results do not change.
    for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(_var, "1")
# Flower's own environment (built by `make install`), also for the temp copies of the project
os.environ.setdefault("CLFLOW_FLOWER_VENV", str(ROOT / ".venv-flower"))
os.environ.pop("MLFLOW_TRACKING_URI", None)
# Stages run as `python stages/...`: make that this interpreter.
os.environ["PATH"] = str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", "")

# Small but real: one seed, two epochs, three for the prototype encoder. TAME's selector is the
# MLP: `auto` trains a CNN candidate each time experts are added (+6 s a TAME run on digits);
# tests/tame/test_learner.py tests `auto`. Its 30 epochs a refit, not 100: refits were a third
# of a TAME run here, and the suite runs ~20.
FAST_PARAMS = {
    "train": {"seeds": [0], "epochs": 2},
    "tame": {"selector_backbone": "mlp", "selector_epochs": 30},
    "federated": {"encoder_epochs": 3},
}


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


# Session fixtures that cost a minute or more: under pytest-xdist every worker builds its own, so
# the tests that share one run on one worker (`--dist loadgroup`); the rest spread freely. A test
# needing several goes with the first of them here. The built project is not among them: it is
# built once for all workers (see start_shared_build).
SHARED = {
    "updated_project": "updated",
    "team_server": "team",
    "prefect_server": "prefect-server",
}


def xdist_group(item: pytest.Item) -> str | None:
    names = [SHARED[name] for name in SHARED if name in item.fixturenames]
    if names:
        return names[0]
    # A module's own module-scoped fixture (a trained model, a CLI run, a project) is built once
    # per worker that runs one of its tests: the module's tests that use one go to one worker.
    for name in item.fixturenames:
        defs = item._fixtureinfo.name2fixturedefs.get(name) or ()
        if defs and defs[-1].scope == "module" and defs[-1].baseid == item.parent.nodeid:
            return item.parent.nodeid.replace("/", ".")
    return None


def needs_build(item: pytest.Item) -> bool:
    """Whether a test reads the shared built project (a copy of it, or the build itself)."""
    return "built_project" in item.fixturenames or "built_api" in item.fixturenames


def run_order(item: pytest.Item) -> int:
    """Where a test goes in the run (the Makefile turns xdist's own reordering off): while the
    built project is built in the background, the quick tests, then the slow ones that need no
    built project; then the two longest units, each on a worker of its own, the team group (its
    clones start from the built project) and the updated project's group; then the built
    project's readers."""
    group = xdist_group(item)
    if group == "team":
        return 3
    if group == "updated":
        return 4
    if needs_build(item):
        return 5
    return 2 if item.get_closest_marker("slow") else 1


# tryfirst: xdist reads the groups in its own pytest_collection_modifyitems, which pluggy would
# otherwise call before this conftest's (later registration, earlier call): the marks came too
# late and every group was split over the workers, each building its own fixtures.
@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        group = xdist_group(item)
        if group:
            item.add_marker(pytest.mark.xdist_group(group))
    items.sort(key=run_order)  # stable: collection order within each part


def pytest_collection_finish(session: pytest.Session) -> None:
    config = session.config
    grouped = [i for i in session.items if i.get_closest_marker("xdist_group")]
    on_worker = hasattr(config, "workerinput") and config.getoption("loadgroup", False)
    if on_worker and grouped and "@" not in grouped[0].nodeid:
        # pytest 9.2 ignores the group suffix xdist 3.8 writes: the groups would silently split
        raise pytest.UsageError("pytest-xdist ignored the xdist_group marks: check the pins")
    if any(needs_build(item) for item in session.items):
        start_shared_build(config)


def shared_dir(config: pytest.Config) -> Path:
    """The session's directory that every xdist worker sees (basetemp's parent on a worker)."""
    base = config._tmp_path_factory.getbasetemp()  # the tmp_path_factory fixture's own
    return base.parent if hasattr(config, "workerinput") else base


BUILD = """
import os, subprocess, sys
from pathlib import Path
from conftest import make_project, start_prefect_server
root = Path(sys.argv[1])
try:
    # a real Prefect server that outlives this build (the session's last process stops it), so
    # the tests can read the flow run, its task logs and the links the stages wrote
    home = root / "prefect-home"
    home.mkdir()
    server, env = start_prefect_server(home)
    (root / "server.pid").write_text(str(server.pid))
    api = env["PREFECT_API_URL"]
    (root / "api").write_text(api)
    make_project(root / "project")
    subprocess.run([sys.executable, "flows/pipeline.py", "--project", str(root / "project")],
                   cwd=root / "project", check=True, env={**os.environ, "PREFECT_API_URL": api})
except BaseException:
    (root / "failed").touch()
    raise
(root / "done").touch()
"""


def start_shared_build(config: pytest.Config) -> None:
    """Start the built project's pipeline in the background, once for all workers (whoever
    creates the marker starts it): the tests that need no built project run meanwhile."""
    root = shared_dir(config) / "built"
    root.mkdir(exist_ok=True)
    try:
        (root / "started").open("x").close()
    except FileExistsError:
        return
    env = {**os.environ, "PYTHONPATH": str(ROOT / "tests")}
    for name in ("PREFECT_API_URL", "PREFECT_HOME"):  # its own API and home, as `make run` has
        env.pop(name, None)
    with open(root / "build.log", "w") as log:
        build = subprocess.Popen(
            [sys.executable, "-c", BUILD, str(root)], env=env, cwd=root,
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    (root / "build.pid").write_text(str(build.pid))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """The build's Prefect server lives until the session's last process ends: the controller
    under xdist (after every worker), else the one process; an unfinished build goes too."""
    if hasattr(session.config, "workerinput"):
        return
    root = shared_dir(session.config) / "built"
    for name in ("build.pid", "server.pid"):
        try:
            os.killpg(int((root / name).read_text()), signal.SIGTERM)
        except (OSError, ValueError):
            pass  # not started, or gone


def built_origin(request: pytest.FixtureRequest) -> tuple[Path, str]:
    """The shared built project itself and the Prefect API its flow ran on, once the background
    build is done (its flow run names this path, not a worker's copy). Read, never change, it."""
    root = shared_dir(request.config) / "built"
    deadline = time.monotonic() + 1200
    while not (root / "done").exists():
        if (root / "failed").exists() or time.monotonic() > deadline:
            log = (root / "build.log").read_text()[-4000:]
            raise AssertionError(f"the shared built project failed:\n{log}")
        time.sleep(2)
    return root / "project", (root / "api").read_text()


@pytest.fixture
def built_api(request) -> Iterator[Path]:
    """The shared built project (see built_origin), with PREFECT_API_URL set to the Prefect
    server its pipeline flow ran on for the test's duration, for tests that read that flow run."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    origin, api = built_origin(request)
    with temporary_settings(updates={PREFECT_API_URL: api}):
        yield origin


@pytest.fixture(scope="session")
def built_project(request, tmp_path_factory) -> Path:
    """A project on which the pipeline flow (every stage through `dvc repro`) has run: built once
    for the session, in the background; each worker gets its own copy of it (tests that change
    it work on a further copy_project)."""
    return copy_project(built_origin(request)[0], tmp_path_factory.mktemp("built") / "project")


@pytest.fixture(scope="session", autouse=True)
def prefect_home(tmp_path_factory) -> None:
    """Prefect's home (its database, its settings) in the session's temp directory."""
    os.environ["PREFECT_HOME"] = str(tmp_path_factory.mktemp("prefect_home"))


@pytest.fixture(scope="session", autouse=True)
def _prefect_api_for_slow_tests(request) -> None:
    """Slow tests run stages and flows in subprocesses: they share the session's API, started
    before any of their module or session fixtures runs a flow (one that found no API started
    a Prefect server of its own). A quick test that calls Prefect in-process gets Prefect's own
    ephemeral API, started on first use; a session of quick tests starts none (its start cost
    `make test-fast` ~20 s a worker)."""
    if any(item.get_closest_marker("slow") for item in request.session.items):
        request.getfixturevalue("prefect_api")


@pytest.fixture(scope="session")
def prefect_api(prefect_home):
    """One ephemeral Prefect API for the session's slow tests (it takes ~10 s to start).

    Exported as PREFECT_API_URL too, so the flows that stages run in subprocesses (the
    federated stage's) use it instead of each starting an API of its own.
    """
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


def until(what, timeout: float, step: float = 1.0):
    """Poll `what()` until it returns something truthy (returned); fail after `timeout` s."""
    deadline = time.monotonic() + timeout
    while not (found := what()):
        assert time.monotonic() < deadline, f"{what.__name__}: not within {timeout} s"
        time.sleep(step)
    return found


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


def start_prefect_server(home: Path, **settings: str) -> tuple[subprocess.Popen, dict[str, str]]:
    """A real `prefect server start` on a free 127.0.0.1 port (its own process group), its
    database in `home`, `settings` in its environment, once it answers; returns it and the env
    that points at it. The caller stops it."""
    port = free_port()
    env = {
        **os.environ,
        "PREFECT_HOME": str(home),
        "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
        "PREFECT_LOGGING_LEVEL": "WARNING",
        **settings,
    }
    with open(home / "server.log", "w") as log:  # the server holds its own descriptor
        proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "prefect"), "server", "start", "--host",
             "127.0.0.1", "--port", str(port)],
            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        wait_http(f"http://127.0.0.1:{port}/api/health", 120, proc)
    except BaseException:
        stop(proc)
        raise
    return proc, env


@contextmanager
def running_prefect_server(home: Path, **settings: str) -> Iterator[dict[str, str]]:
    """start_prefect_server for the block; yields the env that points at it."""
    proc, env = start_prefect_server(home, **settings)
    try:
        yield env
    finally:
        stop(proc)


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory):
    """One real Prefect server for the session's tests (see running_prefect_server)."""
    with running_prefect_server(tmp_path_factory.mktemp("prefect_server_home")) as env:
        yield env


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
    from clflow.streams import load_stream
    from clflow.streams.demo import example_experience
    from clflow.util.io import write_parquet

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


def team_home() -> Path:
    """A new directory that PostgreSQL's `postgres` user can reach (pytest's tmp dirs are 0700)."""
    import tempfile

    home = Path(tempfile.mkdtemp(prefix="clflow-team-"))
    home.chmod(0o755)
    return home


def need_postgres() -> None:
    """Skip, with the reason, where PostgreSQL 15's binaries are absent."""
    from clflow.ops.team import TeamError, pg_tool

    try:
        pg_tool("initdb")
    except TeamError as exc:
        pytest.skip(f"team mode needs PostgreSQL 15 ({exc.args[0]})")


@pytest.fixture(scope="session")
def team_server():
    """PostgreSQL and `mlflow server` on it, started by clflow's own `team up`, for the session;
    yields the Team (its tracking_uri)."""
    from clflow.ops import team as services

    need_postgres()
    home = team_home()
    crew = services.Team.load(home / ".team", pg_port=free_port(), mlflow_port=free_port())
    try:
        services.up(crew, home)  # not a DVC project: no remote is configured
        yield crew
    finally:
        services.down(crew)
        shutil.rmtree(home, ignore_errors=True)


def teammate(team, name: str, role: str = "maintainer") -> dict[str, str]:
    """`clflow team user add NAME --role ROLE` on the team server; the two exports it prints."""
    from clflow.ops import team as services

    secret = services.add_user(team, name, role)  # type: ignore[arg-type]
    password = secret.read_text().strip()
    return {"MLFLOW_TRACKING_USERNAME": name, "MLFLOW_TRACKING_PASSWORD": password}


@contextmanager
def scoring_server(command, env: dict, log: Path, cwd: Path | None = None) -> Iterator[str]:
    """Start `command(port)` on a free loopback port, wait for its /ping, yield its /invocations
    URL, and stop it on the way out."""
    port = free_port()
    with open(log, "w") as out:
        proc = subprocess.Popen(
            command(port), env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        try:
            wait_http(f"http://127.0.0.1:{port}/ping", 180, proc)
            yield f"http://127.0.0.1:{port}/invocations"
        finally:
            stop(proc)


def mlflow_models_serve(tracking_uri: str, model_uri: str, cwd: Path, **extra: str):
    """`mlflow models serve -m MODEL_URI --env-manager local`, the model taken from
    `tracking_uri`'s registry (a context manager yielding its /invocations URL); `extra`: more
    environment (a team server's credentials)."""
    bin_dir = str(Path(sys.executable).parent)  # `--env-manager local` execs uvicorn from here
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri,
           "PATH": bin_dir + os.pathsep + os.environ["PATH"], **extra}  # fmt: skip
    cmd = [f"{bin_dir}/mlflow", "models", "serve", "-m", model_uri, "--env-manager", "local"]
    return scoring_server(lambda port: [*cmd, "-h", "127.0.0.1", "-p", str(port)], env,
                          cwd / "serve.log", cwd)  # fmt: skip


def clflow_serve(project: Path, log: Path, *options: str):
    """`clflow serve --project PROJECT` (its champion; a context manager yielding its
    /invocations URL); stopping it makes the recorder write its last rows."""
    env = {**os.environ, "PATH": str(Path(sys.executable).parent) + os.pathsep + os.environ["PATH"]}
    cmd = [sys.executable, "-m", "clflow.cli", "serve", "--project", str(project)]
    return scoring_server(lambda port: [*cmd, "--port", str(port), *options], env, log)


# A small text stream anyone can read: four classes whose names say what the documents are about.
TEXT_CLASSES = ["sports", "cooking", "music", "weather"]
TEXT_DOCS = {
    "sports": [
        "The team won the football match in extra time",
        "She ran the marathon in under three hours",
        "The striker scored twice in the second half",
        "Our basketball coach called a timeout",
        "The tennis final went to five sets",
        "He swims laps at the pool every morning",
        "The goalkeeper saved a penalty kick",
        "Fans cheered as the runners crossed the finish line",
        "The cyclist won the mountain stage of the race",
        "The referee showed a red card to the defender",
    ],
    "cooking": [
        "Simmer the onions in butter until golden",
        "Bake the bread for forty minutes at high heat",
        "Season the soup with salt, pepper and fresh herbs",
        "Whisk the eggs and sugar before folding in the flour",
        "Roast the chicken with garlic and lemon",
        "Chop the carrots and add them to the stew",
        "Knead the dough and let it rise overnight",
        "Fry the rice with vegetables in a hot wok",
        "The recipe needs two cups of flour and a pinch of salt",
        "Grill the fish and serve it with a green salad",
    ],
    "music": [
        "She plays the violin in the city orchestra",
        "The band released a new album of songs",
        "He practised the piano sonata for hours",
        "The guitarist tuned his strings before the concert",
        "The choir sang a beautiful melody",
        "The drummer kept the rhythm steady all night",
        "They wrote the lyrics and composed the tune together",
        "The jazz trio improvised a long solo",
        "The singer hit the high note at the end of the song",
        "Concert tickets for the symphony sold out quickly",
    ],
    "weather": [
        "Heavy rain and strong winds are expected tomorrow",
        "The forecast says sunny skies and warm temperatures",
        "Snow fell all night and the roads are icy",
        "A thunderstorm with lightning is moving in from the west",
        "The fog will clear by noon, then clouds and drizzle",
        "Temperatures will drop below freezing tonight",
        "A heatwave brings record high temperatures this week",
        "The hurricane made landfall with torrential rain",
        "Expect a cold front and scattered showers",
        "The humidity is high and the air feels muggy",
    ],
}


def write_text_stream(directory: Path, experiences: int = 2) -> Path:
    """TEXT_DOCS as a `stream.source: text` directory: every third document of a class is a
    test row; classes split evenly over `experiences`."""
    import json

    import polars as pl

    directory.mkdir(parents=True, exist_ok=True)
    per = len(TEXT_CLASSES) // experiences
    rows: dict[str, list[dict]] = {"train": [], "test": []}
    for label, name in enumerate(TEXT_CLASSES):
        for i, text in enumerate(TEXT_DOCS[name]):
            split = "test" if i % 3 == 0 else "train"
            rows[split].append({"text": text, "y": label, "experience": label // per})
    schema = {"text": pl.String, "y": pl.Int64, "experience": pl.Int32}
    for split, data in rows.items():
        pl.DataFrame(data, schema=schema).write_parquet(directory / f"{split}.parquet")
    (directory / "classes.json").write_text(json.dumps(TEXT_CLASSES))
    return directory
