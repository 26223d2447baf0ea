"""Served input is checked before it reaches a model: one line naming the row and the feature."""

import numpy as np
import pandas as pd
import pytest

from clflow.tame.pyfunc import InputError, features, texts


@pytest.mark.parametrize(
    "rows, pattern",
    [
        (
            [[1.0, 2.0, float("nan")]],
            r"^row 0, feature 2: missing \(null\) or NaN is not a finite number$",
        ),
        (
            [[1.0, 2.0, 3.0], [1.0, None, 3.0]],
            r"^row 1, feature 1: missing \(null\) or NaN is not a finite number$",
        ),
        (
            [[1.0, 2.0, 3.0], [1.0, 2.0, "inf"]],
            r"^row 1, feature 2: 'inf' is text, not a finite number$",
        ),
        ([[1.0, 2.0, 3.0], [1.0, "x", 3.0]], r"^row 1, feature 1: 'x' is text, not a finite"),
        ([[1.0, 2.0, 3.0], [1.0, "1", 3.0]], r"^row 1, feature 1: '1' is text"),  # not 1.0
        ([[1.0, True, 3.0]], r"^row 0, feature 1: True is a boolean, not a number$"),
        (np.ones((2, 3), dtype=bool), r"^row 0, feature 0: True is a boolean"),
        (pd.DataFrame([[1.0, False, 2.0]]), r"^row 0, feature 1: False is a boolean"),
        ([[1.0, [2.0], 3.0]], r"^row 0, feature 1: a list, not a number$"),
        ([[[[1.0]]]], r"^row 0, feature 0: a list, not a number$"),
        ([[1.0, 2.0, 3.0], [1.0, 2.0]], r"^row 1: 2 values, the model takes 3$"),
        ([[1.0, 2.0]], r"^rows have 2 values, the model takes 3$"),
        ([], r"^empty input"),
        (np.empty((0, 3)), r"^empty input"),
    ],
)
def test_bad_input_is_refused_with_one_line(rows, pattern):
    with pytest.raises(InputError, match=pattern):
        features(rows, 3)


def test_good_input_in_every_shape():
    X = np.arange(6, dtype=np.float32).reshape(2, 3)
    for given in (
        X,
        X.tolist(),
        pd.DataFrame(X),
        pd.DataFrame({"x": list(X)}),
        {"input": X.tolist()},
    ):
        assert np.array_equal(features(given, 3), X)
    assert features([1, 2, 3], 3).shape == (1, 3)  # one row


def test_requirements_cover_every_module_the_model_code_imports():
    from pathlib import Path

    import clflow.tame.pyfunc as pyfunc
    from clflow.util.codedeps import module_level_imports, source_closure

    modules = module_level_imports(source_closure(Path(pyfunc.__file__)))
    assert {"polars", "torch"} <= modules  # the streams and the learners run on load
    never = {"faiss", "sklearn", "dvc", "prefect", "scipy", "yaml", "pydantic"}
    assert not never & modules  # never needed to serve (not even params.yaml's schema)
    declared = {r.split("==")[0] for r in pyfunc.requirements()}
    assert declared == {"mlflow", "numpy", "pandas", "polars", "torch"}
    assert all("+" not in r for r in pyfunc.requirements())  # torch==2.13.0, not 2.13.0+cpu


@pytest.mark.parametrize(
    "given, pattern",
    [
        (pd.DataFrame({"text": ["fine", None]}), r"^row 1: missing text \(null\)$"),
        (pd.DataFrame({"text": ["fine", float("nan")]}), r"^row 1: missing text \(null\)$"),
        (pd.DataFrame({"text": ["fine", 3]}), r"^row 1: 3 is not a string$"),
        ({"text": ["  "]}, r"^row 0: empty text$"),
        ({"text": ["fine", "x" * 11]}, r"^row 1: 11 characters, over stream.max_text_chars \(10\)"),
        (pd.DataFrame({"x": [[1.0]]}), r"^this model takes documents: a 'text' column$"),
        ({"inputs": ["fine"]}, r"^this model takes \{\"text\": \[\.\.\.\]\}"),
        ([], r"^empty input"),
    ],
)
def test_documents_are_checked_with_one_line(given, pattern):
    with pytest.raises(InputError, match=pattern):
        texts(given, 10)


def test_documents_in_every_shape():
    for given in (pd.DataFrame({"text": ["a", "b"]}), {"text": ["a", "b"]}, ["a", "b"]):
        assert texts(given, 10) == ["a", "b"]
    assert texts("one", 10) == ["one"]
