"""The DVC remote: a round trip through an S3-compatible endpoint (moto's server on loopback)
into a second clone, and one line when the remote cannot be reached or is not set."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import free_port, run, stop

from clflow.ops.remote import RemoteError, configure_remote, default_remote, pull, push

pytestmark = pytest.mark.slow
S3_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
          "AWS_DEFAULT_REGION": "us-east-1"}  # fmt: skip
GIT = ["git", "-c", "user.email=t@t", "-c", "user.name=t"]


def dvc_repo(path: Path) -> Path:
    """A git + DVC repository with one DVC-tracked file, committed."""
    (path / "data").mkdir(parents=True)
    (path / "data" / "bank.bin").write_bytes(os.urandom(4096))
    for cmd in (
        ["git", "init", "-q"],
        [sys.executable, "-m", "dvc", "init", "-q"],
        [sys.executable, "-m", "dvc", "add", "-q", "data/bank.bin"],
        ["git", "add", "-A"],
        [*GIT, "commit", "-qm", "data"],
    ):
        run(cmd, path)
    return path


@pytest.fixture
def moto(monkeypatch):
    """moto's S3 server on a free loopback port with a bucket `clflow`; yields its URL."""
    import boto3
    from conftest import wait_http

    for key, value in S3_ENV.items():
        monkeypatch.setenv(key, value)
    port = free_port()
    proc = subprocess.Popen(
        [str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/moto-api/", 60, proc)
        boto3.client("s3", endpoint_url=url).create_bucket(Bucket="clflow")
        yield url
    finally:
        stop(proc)


def test_s3_remote_round_trip_into_a_second_clone(tmp_path, moto):
    alice = dvc_repo(tmp_path / "alice")
    configure_remote(alice, "s3://clflow/cache", endpoint_url=moto)
    assert default_remote(alice) == "s3://clflow/cache"
    run([*GIT, "commit", "-qam", "team remote"], alice)
    assert "1 file pushed" in push(alice)

    bob = tmp_path / "bob"
    run(["git", "clone", "-q", str(alice), str(bob)], tmp_path)
    assert not (bob / "data" / "bank.bin").exists()
    assert "1 file" in pull(bob)
    assert (bob / "data" / "bank.bin").read_bytes() == (alice / "data" / "bank.bin").read_bytes()
    status = run([sys.executable, "-m", "dvc", "status"], bob).stdout
    assert "up to date" in status
    assert run(["git", "status", "--porcelain"], bob).stdout == ""


def test_unreachable_or_missing_remote_is_one_line(tmp_path):
    repo = dvc_repo(tmp_path / "repo")
    with pytest.raises(RemoteError, match="no default DVC remote"):
        push(repo)
    closed = f"http://127.0.0.1:{free_port()}"
    cli = [str(Path(sys.executable).with_name("clflow")), "team", "pull", "--remote",
           "s3://clflow/cache", "--endpoint-url", closed]  # fmt: skip
    proc = run(cli, repo, check=False, env={**os.environ, **S3_ENV, "AWS_MAX_ATTEMPTS": "1"})
    assert proc.returncode != 0 and proc.stderr.count("\n") == 1, proc.stderr
    assert "dvc pull to s3://clflow/cache failed" in proc.stderr
    assert run(["git", "status", "--porcelain"], repo).stdout == ""  # config.local: untracked
    with pytest.raises(RemoteError) as err:  # the results stay: nothing is lost
        push(repo)
    assert "stay in this workspace's cache" in err.value.line()
    assert (repo / "data" / "bank.bin").exists()
