"""`clflow serve`: MLflow's scoring server with the request checked as sent."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from conftest import clflow_serve, post_json, write_text_stream

from clflow.monitor.serving import MAX_DEPTH, read_request, request_problem


@pytest.mark.parametrize(
    "body, words",
    [
        ({"inputs": [[1.0, 2.0], [1.0, True]]}, "row 1, feature 1: true is a boolean"),
        ({"inputs": [[1.0, "1"]]}, 'row 0, feature 1: "1" is text, not a number'),
        ({"inputs": [[1.0, [2.0]]]}, "row 0, feature 1: a list, not a number"),
        ({"instances": [[{"a": 1}]]}, "row 0, feature 0: a JSON object"),
        ({"dataframe_split": {"columns": ["a"], "data": [[False]]}}, "false is a boolean"),
        ({"dataframe_records": [{"a": 1.0, "b": "x"}]}, "row 0, feature 1"),
    ],
)
def test_values_that_are_not_numbers_are_named(body, words):
    assert words in request_problem(json.dumps(body).encode())


def test_numbers_and_nulls_pass_and_depth_is_bounded_without_recursion():
    assert request_problem(b'{"inputs": [[1.0, 2, null, NaN, -3e4]]}') == ""
    assert request_problem(b'{"inputs": [["[[[[[[", 1]]}').startswith("row 0, feature 0")
    deep = b'{"inputs": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    assert f"more than {MAX_DEPTH} levels" in request_problem(deep)
    assert request_problem(b"{not json").startswith("not JSON")


@pytest.mark.parametrize(
    "body, words",
    [
        ({"text": ["fine", 5]}, "row 1: 5 is not a string"),
        ({"text": ["fine", None]}, "row 1: missing text (null)"),
        ({"text": ["fine", "   "]}, "row 1: empty text"),
        ({"text": ["fine", "x" * 21]}, "row 1: 21 characters, over stream.max_text_chars (20)"),
        ({"text": []}, "empty input"),
        ({"text": "fine"}, "must be a list of strings"),
        ({"text": ["fine"], "inputs": [[1.0]]}, "alone"),
    ],
)
def test_documents_that_are_not_are_named(body, words):
    assert words in request_problem(json.dumps(body).encode(), max_text_chars=20)


def test_text_requests_become_a_text_column_and_numbers_refuse_text():
    problem, data = read_request(b'{"text": ["a", "b"]}', max_text_chars=20)
    assert problem == ""
    assert json.loads(data) == {"dataframe_split": {"columns": ["text"], "data": [["a"], ["b"]]}}
    assert "not text" in request_problem(b'{"text": ["a"]}')  # a model of feature rows


@pytest.fixture(scope="module")
def text_project(tmp_path_factory):
    """A project whose registry's champion is a TAME model of a small text stream (its encoder
    logged with it), and that stream."""
    import mlflow
    from mlflow import MlflowClient

    from clflow.config import StreamConfig, TameConfig, TrainConfig
    from clflow.evaluation import run_stream
    from clflow.sentence import EmbeddingCache, encoder_dir
    from clflow.streams import build_stream
    from clflow.tame.persist import save_tame
    from clflow.tame.pyfunc import log_tame_model
    from clflow.tame.training import make_tame
    from clflow.tracking.store import use_store

    project = tmp_path_factory.mktemp("text-project")
    docs = write_text_stream(project / "docs")
    embed = EmbeddingCache(directory=project / ".clflow").embed
    stream = build_stream(StreamConfig(source="text", path=str(docs)), embed)
    learner = make_tame(stream, TrainConfig(epochs=5), TameConfig(), seed=0)
    run_stream(learner, stream, batch_size=8, epochs=5, seed=0)
    save_tame(project / "seed_0.pt", learner, classes=stream.classes)
    use_store(f"sqlite:///{project / 'mlflow.db'}")
    # an experiment of its own: another test in this process may have set an active one
    with mlflow.start_run(experiment_id=mlflow.create_experiment("text")):
        info = log_tame_model(
            project / "seed_0.pt",
            stream.test.text[:2],
            registered_model_name="clflow-tame",
            encoder=encoder_dir(None),
            max_text_chars=120,
        )
    version = info.registered_model_version
    MlflowClient().set_registered_model_alias("clflow-tame", "champion", version)
    return project, stream


@pytest.mark.slow
def test_text_is_served_recorded_and_scored_for_drift(text_project, tmp_path):
    import mlflow.pyfunc

    from clflow.monitor.served import read_window

    project, stream = text_project
    docs = list(stream.test.text)
    local = mlflow.pyfunc.load_model("models:/clflow-tame@champion").predict(
        pd.DataFrame({"text": docs})
    )
    assert (local["label"].to_numpy() == stream.test.y).mean() >= 0.75  # the model learnt

    with clflow_serve(project, tmp_path / "serve.log", "--segment-seconds", "1") as url:
        good = post_json(url, json.dumps({"text": docs}))
        bad = {
            words: post_json(url, json.dumps({"text": [docs[0], value]}))
            for value, words in [
                (7, "row 1: 7 is not a string"),
                ("", "row 1: empty text"),
                ("long " * 30, "row 1: 150 characters, over"),
                (None, "row 1: missing text (null)"),
            ]
        }
        records = {"dataframe_records": [{"text": d} for d in docs[:3]]}
        framed = post_json(url, json.dumps(records))
        numbers = post_json(url, json.dumps({"inputs": [[0.5] * 384]}))
    assert good[0] == 200
    answers = good[1]["predictions"]
    assert [r["label"] for r in answers] == local["label"].tolist()
    assert [r["class_name"] for r in answers] == [stream.classes[i] for i in local["label"]]
    assert all(0 <= r["confidence"] <= 1 and r["expert"] >= 0 for r in answers)
    for words, (status, body) in bad.items():
        assert status == 400 and body["message"].startswith(words), (words, body)
    assert (
        framed[0] == 200
        and [r["label"] for r in framed[1]["predictions"]] == (local["label"].tolist()[:3])
    )
    assert numbers[0] == 400  # a text model takes documents

    # what was answered is the traffic: each document beside its embedding
    window = read_window(project / "data" / "served", 1000)
    assert window.rows["text"].to_list() == docs + docs[:3]
    np.testing.assert_allclose(window.X[: len(docs)], stream.test.X, atol=1e-4)
    drift = subprocess.run(
        [sys.executable, "-m", "clflow.cli", "drift", "--project", str(project), "--json",
         "--window", str(len(docs))],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    report = json.loads(drift.stdout)
    assert report["window"] == len(docs) and report["model_version"] == "1"
    assert 0 <= report["p_value"] <= 1


@pytest.mark.slow
def test_clflow_serve_refuses_what_mlflow_would_convert_and_scores_the_rest(
    updated_project, tmp_path
):
    import mlflow.pyfunc

    from clflow.streams import load_stream
    from clflow.tracking.store import use_store

    project, _, _ = updated_project
    use_store(f"sqlite:///{project / 'mlflow.db'}")
    X = load_stream(project / "data" / "stream").test.X[:5]
    local = mlflow.pyfunc.load_model("models:/clflow-tame@champion").predict(X)
    row = X[1].tolist()

    def with_value(value) -> str:  # the second row with `value` as its feature 5
        return json.dumps({"inputs": [X[0].tolist(), row[:5] + [value] + row[6:]]})

    with clflow_serve(project, tmp_path / "serve.log") as url:
        good = post_json(url, json.dumps({"inputs": X.tolist()}))
        answers = {json.dumps(bad): post_json(url, with_value(bad)) for bad in (True, "1", [1.0])}
        deep = post_json(url, '{"inputs": ' + "[" * 100_000 + "]" * 100_000 + "}")
        nan = post_json(url, with_value(None))
        again = post_json(url, json.dumps({"inputs": X[:2].tolist()}))
        text = post_json(url, json.dumps({"text": ["a document"]}))
    assert good[0] == 200
    assert [r["label"] for r in good[1]["predictions"]] == local["label"].tolist()
    for bad, (status, body) in answers.items():
        assert status == 400 and body["message"].startswith("row 1, feature 5:"), (bad, body)
    assert deep[0] == 400 and "levels" in deep[1]["message"]
    assert nan[0] == 400 and "row 1, feature 5: missing (null)" in nan[1]["message"]  # the model's
    assert again[0] == 200  # still serving
    assert text[0] == 400 and "not text" in text[1]["message"]


def test_the_usual_request_passes_without_a_parse_and_anything_else_is_checked():
    rows = json.dumps({"inputs": [[1.5, -2e-3, None], [3, 4, 5]]}).encode()
    assert read_request(rows) == ("", rows)
    escaped = b'{"a": "\\"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[", "inputs": [[1.0]]}'
    assert request_problem(escaped) == ""  # brackets inside a string (with an escaped quote)
    assert "boolean" in request_problem(b'{"inputs": [[1, true]]}')
    # rows that almost match, then fail: rejected at once, not by trying every way to split the
    # blanks between rows (exponential: 60 rows would never finish). Run apart, so a regression
    # fails here instead of hanging the suite.
    almost = "print(request_problem(b'{\"inputs\": [' + b'[1]  ' * 60 + b'x'))"
    code = f"from clflow.monitor.serving import request_problem\n{almost}"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "not JSON" in done.stdout


def test_errors_are_one_line_without_server_paths():
    from clflow.monitor.serving import public_message

    trace = "Failed to parse CSV: bad line\nTraceback (most recent call last):\n  File x"
    assert public_message(trace) == "Failed to parse CSV: bad line"
    why = "Failed to predict data '[[0. 1.]\n [2. 3.]]'. \nError: row 1, feature 5: missing"
    assert public_message(why) == "row 1, feature 5: missing"
    assert public_message("no file /usr/lib/python3/site-packages/mlflow/x.py here") == (
        "no file <path> here"
    )


def children(pid: int) -> list[int]:
    """The processes whose parent is `pid` (from /proc)."""
    from pathlib import Path

    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(stat.parent.name))
        except (OSError, ValueError, IndexError):
            continue
    return found


def cmdline(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read()
    except OSError:
        return b""


@pytest.mark.slow
def test_workers_serve_and_a_kill_9_of_the_server_loses_no_row(updated_project, tmp_path):
    import os
    import signal
    import time
    import urllib.error
    import urllib.request

    from conftest import free_port, stop, wait_http

    from clflow.monitor.served import read_segment, segments
    from clflow.streams import load_stream

    project, _, _ = updated_project
    X = load_stream(project / "data" / "stream").test.X[:10]
    record, port = tmp_path / "served", free_port()
    cmd = [sys.executable, "-m", "clflow.cli", "serve", "--project", str(project), "--port",
           str(port), "--workers", "2", "--record", str(record),
           "--segment-seconds", "1"]  # fmt: skip
    url = f"http://127.0.0.1:{port}/invocations"

    def rows_written() -> int:
        return sum(read_segment(p).height for p in segments(record))

    with open(tmp_path / "serve.log", "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_http(f"http://127.0.0.1:{port}/ping", 180, proc)
        workers = [
            p for p in children(proc.pid) if "spawn_main" in open(f"/proc/{p}/cmdline").read()
        ]
        assert len(workers) == 2
        for i in range(20):
            assert post_json(url, json.dumps({"inputs": X[i % 5 :][:4].tolist()}))[0] == 200
        deadline = time.monotonic() + 30
        while rows_written() < 80 and time.monotonic() < deadline:
            time.sleep(0.5)
        before = {p: read_segment(p) for p in segments(record)}
        assert sum(df.height for df in before.values()) == 80
        # garbage in a format MLflow parses itself: its 400, one line, no traceback or path
        req = urllib.request.Request(url, data=b"\x00a,b\n1,2,3,\n\xff", headers={
            "Content-Type": "text/csv"})  # fmt: skip
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(req, timeout=30)
        answer = err.value.read().decode()
        assert (
            err.value.code == 400 and "stack_trace" not in answer and "site-packages" not in answer
        )
        assert "\n" not in json.loads(answer)["message"]
        for _ in range(3):  # rows still in the workers' memory when the server is killed
            assert post_json(url, json.dumps({"inputs": X[:3].tolist()}))[0] == 200
        os.kill(proc.pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while any(os.path.exists(f"/proc/{p}") for p in workers) and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        stop(proc)
        try:  # workers that outlived their parent (they should not): not left running
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    for path, df in before.items():  # every segment written before the kill, intact
        assert read_segment(path).equals(df)
    assert rows_written() == 80 + 9  # the workers wrote what they held when their parent died
    assert not [p for p in record.iterdir() if p not in segments(record)]  # no half-written file
