"""The fault catalogue (README): each fault, what the user sees, and proof that nothing was lost.

All on one real project (DVC, MLflow SQLite registry, Prefect) that has a registered
champion. Each test injects one fault, checks the one-line error, compares file
hashes and the registry before and after, and puts the project back.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import FAST_PARAMS, copy_project, file_hashes, free_port, run, update_params

from clflow.ops.dvcrun import own_errors

pytestmark = pytest.mark.slow
WATCHED = ("data/stream", "data/experiences", "dvc.lock", "models/tame", "metrics", "plots")


@pytest.fixture(scope="module")
def project(tmp_path_factory, built_project) -> Path:
    return copy_project(built_project, tmp_path_factory.mktemp("faults") / "project")


def champion(project: Path) -> tuple[str, int]:
    from clflow.tracking.registry import Registry

    reg = Registry("clflow-tame", f"sqlite:///{project / 'mlflow.db'}")
    return str(reg.version("champion").version), len(reg.table())


def dvc_repro(project: Path, *targets: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return run(
        [sys.executable, "-m", "dvc", "repro", *targets],
        project,
        check=False,
        env={**os.environ, **(env or {})},
    )


def one_error_line(proc: subprocess.CompletedProcess) -> str:
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "Traceback" not in out, out
    own = own_errors(out)
    assert len(own) == 1, out
    return own[0]


class Unchanged:
    """Context: the watched files and the registry are byte-identical afterwards."""

    def __init__(self, project: Path):
        self.project = project

    def __enter__(self):
        self.hashes, self.registry = file_hashes(self.project, *WATCHED), champion(self.project)
        return self

    def __exit__(self, *exc):
        if exc[0] is None:
            assert file_hashes(self.project, *WATCHED) == self.hashes
            assert champion(self.project) == self.registry


SELECTOR_EPOCHS = f"selector_epochs: {FAST_PARAMS['tame']['selector_epochs']}"  # a test edits it


def edit(path: Path, old: str, new: str) -> str:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))
    return text


def test_params_typo(project):
    before = edit(project / "params.yaml", "  alpha:", "  alpah:")
    try:
        with Unchanged(project):
            line = one_error_line(dvc_repro(project))
        assert (
            line
            == "error: params.yaml: field 'tame.alpah': unknown key; did you mean 'tame.alpha'?"
        )
    finally:
        (project / "params.yaml").write_text(before)


def test_bad_stream_directory(project, tmp_path):
    import numpy as np
    import polars as pl

    from clflow.streams import load_stream, write_stream

    bad = tmp_path / "stream"
    write_stream(load_stream(project / "data" / "stream"), bad)
    df = pl.read_parquet(bad / "train.parquet")
    x = np.stack(df["x"].to_list())
    x[5, 3] = np.inf
    df.with_columns(pl.Series("x", x).cast(pl.List(pl.Float32))).write_parquet(
        bad / "train.parquet"
    )
    before = (project / "params.yaml").read_text()
    update_params(project, {"stream": {"source": "parquet", "path": str(bad)}})
    try:
        with Unchanged(project):
            line = one_error_line(dvc_repro(project, "prepare"))
        assert (
            line
            == f"error: {bad / 'train.parquet'}: field 'x': NaN or inf in features (first at row 5)"
        )
    finally:
        (project / "params.yaml").write_text(before)


def test_corrupt_checkpoint_is_kept_and_nothing_else_changes(project):
    ckpt = project / "models" / "tame" / "seed_0.pt"
    good = ckpt.read_bytes()
    ckpt.write_bytes(good[: len(good) // 3])  # truncated, e.g. a full disk
    try:
        with Unchanged(
            project
        ):  # includes the truncated checkpoint itself: kept as found, for inspection
            line = one_error_line(dvc_repro(project, "register"))
        assert line.startswith("error: models/tame/seed_0.pt: truncated or corrupt checkpoint")
    finally:
        ckpt.write_bytes(good)
    assert "up to date" in dvc_repro(project, "register").stdout


# Where `dvc repro tame` is killed: while it writes (into staged copies), with only models/tame
# moved in by the commit, and with every out moved in but the commit unfinished.
# (tests/test_io.py kills a stage at every one of its points in turn.)
KILL_POINTS = ("seed_0.pt", "commit metrics/tame.json", "commit done")


def test_a_stage_killed_at_any_write_or_rename_keeps_the_previous_outs(project):
    from clflow.checkpoint import load_checkpoint
    from clflow.util.io import StagedOuts

    outs = ("models/tame", "metrics/tame.json", "plots/tame")
    # a cheaper selector (10 epochs): every run retrains, and is killed after it
    before_params = edit(project / "params.yaml", SELECTOR_EPOCHS, "selector_epochs: 10")
    try:
        before, registry = file_hashes(project, *outs, "dvc.lock"), champion(project)
        for point in KILL_POINTS:  # SIGKILL by a test-only hook
            proc = dvc_repro(project, "tame", env={"CLFLOW_TEST_KILL_AT": point})
            assert f"{point}\n" in proc.stderr + proc.stdout, proc.stdout + proc.stderr
            if point.startswith("commit "):
                # killed between the commit's renames: the stage's next start rolls it back
                assert (project / "models" / ".tame.commit.json").exists()
                StagedOuts(*(project / o for o in outs))
            assert file_hashes(project, *outs, "dvc.lock") == before, f"killed at {point}"
            assert champion(project) == registry
        done = dvc_repro(project, "tame")  # no cleanup needed
        assert done.returncode == 0, done.stdout + done.stderr
        load_checkpoint(project / "models" / "tame" / "seed_0.pt")
        # the run that got through left no staged or set-aside copies, and DVC agrees
        assert not [p for p in project.rglob(".*") if p.suffix in (".staged", ".prev")]
        assert "up to date" in run([sys.executable, "-m", "dvc", "status", "tame"], project).stdout
    finally:
        (project / "params.yaml").write_text(before_params)
        assert dvc_repro(project, "register").returncode == 0


def test_unavailable_mlflow_server_is_named_in_bounded_time(project):
    uri = f"http://127.0.0.1:{free_port()}"
    with Unchanged(project):
        t0 = time.monotonic()
        proc = run(
            [sys.executable, "stages/register.py"],
            project,
            check=False,
            env={**os.environ, "MLFLOW_TRACKING_URI": uri, "CLFLOW_SERVICE_TIMEOUT": "3"},
        )
        took = time.monotonic() - t0
        line = one_error_line(proc)
    assert line.startswith(
        f"error: {uri}/health: the MLflow tracking server did not answer within 3 s"
    )
    assert took < 60


def test_unavailable_prefect_api_is_named_in_bounded_time(project):
    url = f"http://127.0.0.1:{free_port()}/api"
    with Unchanged(project):
        proc = run(
            [sys.executable, "flows/pipeline.py", "--stage", "prepare"],
            project,
            check=False,
            env={**os.environ, "PREFECT_API_URL": url, "CLFLOW_SERVICE_TIMEOUT": "3"},
        )
        line = one_error_line(proc)
    assert line.startswith(f"error: {url}/health: the Prefect API did not answer within 3 s")


def processes(where) -> list[str]:
    """Command lines of live processes for which `where(pid)` holds (read from /proc)."""
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if where(proc):
                    found.append((proc / "cmdline").read_bytes().replace(b"\0", b" ").decode())
            except OSError:  # gone, or not ours to read
                continue
    return found


def in_project(project: Path):
    return lambda proc: Path(os.readlink(proc / "cwd")) == project


def test_a_stage_past_its_timeout_is_stopped_and_the_project_freed(project):
    from clflow.util.locks import project_lock

    before_params = edit(project / "params.yaml", SELECTOR_EPOCHS, "selector_epochs: 32")
    try:
        with Unchanged(project):
            cmd = ["flows/pipeline.py", "--stage", "tame", "--stage-timeout", "2"]
            line = one_error_line(run([sys.executable, *cmd], project, check=False))
            assert "stage 'tame' did not finish within 2 s and was stopped" in line
            assert not processes(in_project(project))  # DVC and the stage are gone
            with project_lock(project, timeout=0):  # and the project is free at once
                pass
    finally:
        (project / "params.yaml").write_text(before_params)


def test_flow_arguments_are_checked_before_anything_runs(project, tmp_path):
    typo = run([sys.executable, "flows/pipeline.py", "--stage", "tamee"], project, check=False)
    assert "no stage 'tamee' (stages: prepare, " in one_error_line(typo)
    assert "Retrying" not in typo.stdout + typo.stderr
    nowhere = tmp_path / "no" / "project"
    proc = run(
        [sys.executable, "flows/continual.py", "--project", str(nowhere)], project, check=False
    )
    assert "not a directory" in one_error_line(proc) and not nowhere.exists()
    negative = run([sys.executable, "flows/pipeline.py", "--lock-timeout", "-1"], project, False)
    assert negative.returncode == 2 and "must be 0 seconds or more" in negative.stderr


def test_sigterm_stops_a_flow_its_stage_and_its_temporary_prefect_api(project, tmp_path):
    home = tmp_path / "prefect-home"  # marks the flow's own ephemeral API among processes
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env["PREFECT_HOME"] = str(home)

    def has_home(proc):
        return f"PREFECT_HOME={home}".encode() in (proc / "environ").read_bytes()

    before_params = edit(project / "params.yaml", SELECTOR_EPOCHS, "selector_epochs: 33")
    try:
        with Unchanged(project):
            flow = subprocess.Popen(
                [sys.executable, "flows/pipeline.py", "--stage", "tame"],
                cwd=project,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            deadline = time.monotonic() + 180
            while not any("stages/tame.py" in c for c in processes(in_project(project))):
                assert flow.poll() is None and time.monotonic() < deadline
                time.sleep(0.5)
            assert processes(has_home)  # the flow started a temporary Prefect API
            flow.send_signal(signal.SIGTERM)
            assert flow.wait(60) != 0
            deadline = time.monotonic() + 20  # the API server stops as its parent exits
            while processes(has_home) or processes(in_project(project)):
                assert time.monotonic() < deadline, processes(has_home)
                time.sleep(0.5)
    finally:
        (project / "params.yaml").write_text(before_params)


def test_concurrent_runs_wait_for_the_project_lock_or_stop_clearly(project):
    from clflow.util.locks import project_lock

    cmd = [sys.executable, "flows/pipeline.py", "--stage", "prepare", "--lock-timeout"]
    with Unchanged(project):
        with project_lock(project, timeout=0):
            refused = run(cmd + ["1"], project, check=False)
            waiter = subprocess.Popen(
                cmd + ["300"],
                cwd=project,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            time.sleep(3)
            assert waiter.poll() is None  # still waiting for us
        out, err = waiter.communicate(timeout=300)
    assert "the project is held by another run" in one_error_line(refused)
    assert waiter.returncode == 0, out + err


def test_failed_registration_keeps_the_champion(project):
    # a model that cannot be read fails the register stage before any alias moves
    ckpt = project / "models" / "tame" / "seed_0.pt"
    good = ckpt.read_bytes()
    ckpt.write_bytes(b"not a checkpoint")
    try:
        with Unchanged(project):
            one_error_line(run([sys.executable, "stages/register.py"], project, check=False))
    finally:
        ckpt.write_bytes(good)


def test_a_held_dvc_lock_is_retried_by_the_flow(project, prefect_api):
    import threading

    import zc.lockfile
    from conftest import load_flow

    from clflow.ops.dvcrun import StageFailed, repro_stage

    lock = zc.lockfile.LockFile(
        str(project / ".dvc" / "tmp" / "lock")
    )  # what a concurrent `dvc repro` holds
    try:
        with pytest.raises(StageFailed) as err:
            repro_stage("prepare", project)
        assert err.value.retryable and "Unable to acquire lock" in str(err.value)
        threading.Timer(3.0, lock.close).start()  # the other `dvc repro` finishes
        metrics = load_flow(project, "pipeline", "pipeline")(
            project=str(project), stages=["prepare"]
        )
    finally:
        lock.close()
    assert "tame" in metrics
