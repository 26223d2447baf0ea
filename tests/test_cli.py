"""`clflow retrieve`: neighbours with labels and scores; one-line errors."""

from __future__ import annotations

import subprocess
import sys

import pytest

from clflow.config import StreamConfig
from clflow.retrieval import DemoBank
from clflow.streams import build_stream, write_stream

CLI = [sys.executable, "-m", "clflow.cli"]


@pytest.fixture(scope="module")
def bank_and_queries(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cli")
    s = build_stream(StreamConfig(source="digits", experiences=2))
    write_stream(s, tmp / "stream")
    bank = DemoBank(s.n_features)
    bank.add(s.train.X, s.train.y, {"experience": s.train.experience})
    bank.save(tmp / "bank")
    return tmp, s


def test_retrieve_prints_neighbours(bank_and_queries):
    tmp, s = bank_and_queries
    out = subprocess.run(
        CLI
        + [
            "retrieve",
            "--bank",
            str(tmp / "bank"),
            "--query",
            str(tmp / "stream" / "test.parquet"),
            "-k",
            "3",
            "--limit",
            "2",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for col in ("query", "rank", "id", "label", "similarity", "query_label", "experience"):
        assert col in out
    assert out.count("\n") >= 6  # header + 2 queries x 3 neighbours


def test_help():
    out = subprocess.run(
        CLI + ["retrieve", "--help"], capture_output=True, text=True, check=True
    ).stdout
    assert "--bank" in out and "-k" in out


@pytest.mark.parametrize("case", ["missing bank", "corrupt index", "bad query", "wrong dim"])
def test_errors_are_one_line(bank_and_queries, tmp_path, case):
    import shutil

    import polars as pl

    tmp, s = bank_and_queries
    bank, query = tmp / "bank", tmp / "stream" / "test.parquet"
    if case == "missing bank":
        bank = tmp_path / "nope"
    elif case == "corrupt index":
        bank = tmp_path / "bank"
        shutil.copytree(tmp / "bank", bank)
        (bank / "index.faiss").write_bytes(b"garbage")
    elif case == "bad query":
        query = tmp_path / "q.parquet"
        pl.DataFrame({"y": [1]}).write_parquet(query)
    else:
        query = tmp_path / "q.parquet"
        pl.DataFrame({"x": [[0.1, 0.2]]}).write_parquet(query)
    proc = subprocess.run(
        CLI + ["retrieve", "--bank", str(bank), "--query", str(query)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr


@pytest.mark.parametrize(
    "args, words",
    [
        (["registry", "promote"], "which version?"),
        (["registry", "promote", "7"], "no version 7"),
        (["registry", "rollback"], "no champion to roll back"),
        (["new-experience", "x.parquet", "--stream", "no-such-dir"], "stream directory not found"),
    ],
)
def test_registry_and_experience_errors_are_one_line(tmp_path, args, words):
    import mlflow

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri).create_registered_model("clflow-tame")
    proc = subprocess.run(
        CLI + args + (["--project", str(tmp_path)] if args[0] == "registry" else []),
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and words in lines[0], proc.stderr


def test_every_subcommand_has_help():
    for sub in ("retrieve", "registry", "new-experience"):
        out = subprocess.run(
            CLI + [sub, "--help"], capture_output=True, text=True, check=True
        ).stdout
        assert "usage: clflow" in out
