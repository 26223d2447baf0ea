"""`clflow serve`: MLflow's scoring server with the request checked as sent."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import free_port, post_json, stop, wait_http

from clflow.ops.serving import MAX_DEPTH, request_problem


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
    port = free_port()
    env = {**os.environ, "PATH": str(Path(sys.executable).parent) + os.pathsep + os.environ["PATH"]}
    log = open(tmp_path / "serve.log", "w")
    cmd = [sys.executable, "-m", "clflow.cli", "serve", "--project", str(project)]
    proc = subprocess.Popen(
        [*cmd, "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}/invocations"
    row = X[1].tolist()

    def with_value(value) -> str:  # the second row with `value` as its feature 5
        return json.dumps({"inputs": [X[0].tolist(), row[:5] + [value] + row[6:]]})

    try:
        wait_http(f"http://127.0.0.1:{port}/ping", 180, proc)
        good = post_json(url, json.dumps({"inputs": X.tolist()}))
        answers = {json.dumps(bad): post_json(url, with_value(bad)) for bad in (True, "1", [1.0])}
        deep = post_json(url, '{"inputs": ' + "[" * 100_000 + "]" * 100_000 + "}")
        nan = post_json(url, with_value(None))
        again = post_json(url, json.dumps({"inputs": X[:2].tolist()}))
    finally:
        stop(proc)
        log.close()
    assert good[0] == 200
    assert [r["label"] for r in good[1]["predictions"]] == local["label"].tolist()
    for bad, (status, body) in answers.items():
        assert status == 400 and body["message"].startswith("row 1, feature 5:"), (bad, body)
    assert deep[0] == 400 and "levels" in deep[1]["message"]
    assert nan[0] == 400 and "row 1, feature 5: missing (null)" in nan[1]["message"]  # the model's
    assert again[0] == 200  # still serving
