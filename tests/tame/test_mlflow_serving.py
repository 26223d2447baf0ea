"""`mlflow models serve` of the registry's champion answers like in-process prediction."""

from __future__ import annotations

import json

import pytest
from conftest import mlflow_models_serve, post_json

pytestmark = pytest.mark.slow


def test_served_champion_equals_in_process_predict(updated_project, tmp_path):
    import mlflow.pyfunc

    from clflow.streams import load_stream
    from clflow.tracking.store import use_store

    project, _, _ = updated_project
    uri = f"sqlite:///{project / 'mlflow.db'}"
    X = load_stream(project / "data" / "stream").test.X[::7][:40]
    use_store(uri)
    local = mlflow.pyfunc.load_model("models:/clflow-tame@champion").predict(X)

    with mlflow_models_serve(uri, "models:/clflow-tame@champion", tmp_path) as url:
        served = post_json(url, json.dumps({"inputs": X.tolist()}))[1]["predictions"]
        # bad rows get HTTP 400 with a line naming the row and the feature; the server keeps serving
        row = X[0].tolist()
        row[5] = "BAD"
        body = json.dumps({"inputs": [X[0].tolist(), row]})
        answers = {
            bad: post_json(url, body.replace('"BAD"', bad))
            for bad in ("NaN", "null", '"inf"', "Infinity")
        }
        short = post_json(url, json.dumps({"inputs": [X[0][:10].tolist()]}))
        empty = post_json(url, json.dumps({"inputs": []}))
        again = post_json(url, json.dumps({"inputs": X[:3].tolist()}))
    for bad, (status, body) in answers.items():
        assert status == 400, (bad, body)
        assert "row 1, feature 5:" in body["message"], (bad, body)
        assert "not a finite number" in body["message"], (bad, body)
    assert short[0] == 400 and "64" in short[1]["message"]
    assert empty[0] == 400
    assert (
        again[0] == 200
        and [r["label"] for r in again[1]["predictions"]] == local["label"].tolist()[:3]
    )
    assert [r["label"] for r in served] == local["label"].tolist()
    assert [r["expert"] for r in served] == local["expert"].tolist()
    assert [r["class_name"] for r in served] == local["class_name"].tolist()
