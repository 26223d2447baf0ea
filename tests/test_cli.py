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


@pytest.fixture(scope="module")
def empty_registry(tmp_path_factory):
    """A project whose registry knows `clflow-tame` but has no versions (the errors change
    nothing, so one serves every case)."""
    import mlflow

    tmp = tmp_path_factory.mktemp("registry")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri).create_registered_model("clflow-tame")
    return tmp


@pytest.mark.parametrize(
    "args, words",
    [
        (["registry", "promote"], "which version?"),
        (["registry", "promote", "7"], "no version 7"),
        (["registry", "rollback"], "no champion to roll back"),
        (["new-experience", "x.parquet", "--stream", "no-such-dir"], "stream directory not found"),
    ],
)
def test_registry_and_experience_errors_are_one_line(empty_registry, args, words):
    tmp_path = empty_registry
    proc = subprocess.run(
        CLI + args + (["--project", str(tmp_path)] if args[0] == "registry" else []),
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and words in lines[0], proc.stderr


@pytest.mark.parametrize(
    "sub",
    ["retrieve", "registry", "lineage", "serve", "drift", "report", "team", "new-experience"],
)
def test_every_subcommand_has_help(sub, capsys):
    from clflow.cli import main

    with pytest.raises(SystemExit) as done:
        main([sub, "--help"])
    assert done.value.code == 0 and f"usage: clflow {sub}" in capsys.readouterr().out


def test_k_is_capped_at_the_bank_and_bad_arguments_are_refused(bank_and_queries):
    tmp, s = bank_and_queries
    base = CLI + ["retrieve", "--bank", str(tmp / "bank"), "--query"]
    query = str(tmp / "stream" / "test.parquet")
    out = subprocess.run(
        base + [query, "-k", "100000000", "--limit", "1"], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr  # the whole bank, not 100M slots of memory
    assert out.stdout.count("\n") >= len(s.train.y)
    for bad in (["--limit", "0"], ["--limit", "-1"], ["-k", "0"]):
        proc = subprocess.run(base + [query, *bad], capture_output=True, text=True)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr
        assert "must be at least 1" in proc.stderr


def test_new_experience_never_overwrites_without_force_and_never_pipeline_data(
    bank_and_queries, tmp_path
):
    import hashlib
    import shutil

    tmp, _ = bank_and_queries
    project = tmp_path / "p"
    shutil.copytree(tmp / "stream", project / "data" / "stream")
    from conftest import ROOT

    shutil.copy(ROOT / "dvc.yaml", project / "dvc.yaml")
    tracked = project / "data" / "stream" / "train.parquet"
    before = hashlib.sha256(tracked.read_bytes()).hexdigest()

    def new(*args):
        return subprocess.run(
            CLI + ["new-experience", *args], capture_output=True, text=True, cwd=project
        )

    for args, words in [
        (["data/stream/train.parquet", "--force"], "inside data/stream, which the pipeline owns"),
        (["data/experiences/0009-x.parquet"], "inside data/experiences"),
        (["data/stream"], "inside data/stream"),
        (["out.parquet", "--rotate", "nan"], "must be a finite number"),
        (["out.parquet", "--limit", "-1"], "must be 0 or more"),
    ]:
        proc = new(*args)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
        assert words in proc.stderr, proc.stderr
    assert hashlib.sha256(tracked.read_bytes()).hexdigest() == before
    (project / "data" / "incoming").mkdir()
    assert new("data/incoming/a.parquet", "--limit", "50").returncode == 0
    again = new("data/incoming/a.parquet")
    assert again.returncode == 2 and "exists; pass --force" in again.stderr
    assert new("data/incoming/a.parquet", "--force").returncode == 0
    (project / "data" / "incoming" / "d.parquet").mkdir()
    assert "is a directory" in new("data/incoming/d.parquet").stderr
    (project / "a-file").write_text("")
    assert "cannot write" in new("a-file/x.parquet").stderr  # its folder cannot be made


def test_an_unreachable_tracking_server_is_one_line_in_bounded_time(tmp_path):
    import os
    import time

    start = time.monotonic()
    proc = subprocess.run(
        CLI + ["registry", "list", "--uri", "http://127.0.0.1:1"],
        capture_output=True,
        text=True,
        env={**os.environ, "CLFLOW_SERVICE_TIMEOUT": "2"},
        timeout=60,
    )
    assert proc.returncode == 2 and time.monotonic() - start < 60
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "did not answer within 2 s" in lines[0], proc.stderr


@pytest.mark.parametrize(
    "content, words",
    [
        (b"{not json", "not JSON"),
        (b"[1, 2, 3]", "expected a JSON object, got a list"),
        (b"\xff\xfe", "not JSON"),
    ],
)
def test_report_on_a_file_that_is_not_metrics_is_one_line(tmp_path, capsys, content, words):
    from clflow.cli import main

    (tmp_path / "metrics").mkdir()
    (tmp_path / "metrics" / "tame.json").write_text('{"avg_accuracy": 0.9}')
    (tmp_path / "metrics" / "bad.json").write_bytes(content)
    with pytest.raises(SystemExit) as exit_:
        main(["report", "--metrics", str(tmp_path / "metrics")])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 2 and len(err) == 1
    assert "bad.json" in err[0] and words in err[0]


@pytest.mark.parametrize("width", ["100000000", "0", "39"])
def test_report_width_is_bounded(tmp_path, capsys, width):
    from clflow.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["report", "--width", width])
    assert exit_.value.code == 2 and "must be 40 to 1000 columns" in capsys.readouterr().err


@pytest.mark.slow  # encodes a text stream with the sentence encoder
def test_retrieve_text_shows_readable_demonstrations(tmp_path):
    from conftest import TEXT_CLASSES, write_text_stream

    from clflow.sentence import EmbeddingCache

    cache = EmbeddingCache(directory=tmp_path / "cache")
    s = build_stream(
        StreamConfig(source="text", path=str(write_text_stream(tmp_path / "docs"))), cache.embed
    )
    write_stream(s, tmp_path / "stream")
    bank = DemoBank(s.n_features)
    bank.add(s.train.X, s.train.y, {"text": s.train.text})
    bank.save(tmp_path / "bank")
    args = ["retrieve", "--bank", str(tmp_path / "bank"), "-k", "2"]
    args += ["--classes", str(tmp_path / "stream" / "classes.json")]
    out = subprocess.run(
        CLI + args + ["--text", "Who won the cup final last night?", "--text", "A hot cake"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    blocks = out.split("query 1:")
    assert "query 0: Who won the cup final" in blocks[0]
    assert blocks[0].count("similarity") == 2 and "sports:" in blocks[0]
    assert "cooking:" in blocks[1]
    assert TEXT_CLASSES[0] in out
    digits = subprocess.run(  # a bank of pixels cannot take a document: one line
        CLI + ["retrieve", "--bank", str(tmp_path / "bank"), "--text", " "],
        capture_output=True,
        text=True,
    )
    assert digits.returncode == 2 and "query 0: empty text" in digits.stderr
